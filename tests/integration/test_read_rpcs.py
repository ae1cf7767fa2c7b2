"""Every read RPC over a real channel to a real server, for each demo situation."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from entitlements.v1 import common_pb2, offer_service_pb2
from entitlements.v1 import entitlement_service_pb2 as es
from tests.support.harness import HARNESS_BACKENDS, NOW, Harness

pytestmark = pytest.mark.parametrize("harness", HARNESS_BACKENDS, indirect=True)

WEB = common_pb2.PLATFORM_WEB
IOS = common_pb2.PLATFORM_IOS


def get(harness: Harness, user_id: str, feature_id: str) -> es.Entitlement:
    response = harness.entitlements.GetEntitlement(
        es.GetEntitlementRequest(user_id=user_id, feature_id=feature_id), timeout=5
    )
    assert response.catalog_version.startswith("sha256:")
    return response.entitlement


def offers(
    harness: Harness, user_id: str, market: str = "US", platform: int = WEB
) -> offer_service_pb2.GetOffersResponse:
    return harness.offers.GetOffers(
        offer_service_pb2.GetOffersRequest(
            user_id=user_id,
            market=market,
            platform=platform,  # type: ignore[arg-type]
            include_ineligible=True,
        ),
        timeout=5,
    )


def reasons(response: offer_service_pb2.GetOffersResponse) -> dict[str, str]:
    return {
        o.offer_id: offer_service_pb2.IneligibilityReason.Name(o.reason)
        for o in response.ineligible_offers
    }


def bad_request_fields(error: grpc.RpcError) -> list[str]:
    assert isinstance(error, grpc.Call)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    fields = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        assert detail.Unpack(bad_request)
        fields.extend(v.field for v in bad_request.field_violations)
    return fields


class TestGetEntitlement:
    def test_free_user_has_free_tier_only(self, harness: Harness) -> None:
        shuffle = get(harness, "demo-free", "shuffle_play")
        assert shuffle.granted
        assert shuffle.source.type == es.SOURCE_TYPE_FREE_TIER
        assert shuffle.plan_id == "free"
        assert not shuffle.HasField("valid_until")
        ad_free = get(harness, "demo-free", "ad_free_playback")
        assert not ad_free.granted
        assert ad_free.denial_reason == es.DENIAL_REASON_NO_ENTITLING_SOURCE

    def test_unknown_user_is_a_free_user(self, harness: Harness) -> None:
        assert not get(harness, "never-seen-before", "offline_downloads").granted
        assert get(harness, "never-seen-before", "shuffle_play").granted

    def test_trialing_user(self, harness: Harness) -> None:
        e = get(harness, "demo-trial", "offline_downloads")
        assert e.granted
        assert e.state == es.ENTITLEMENT_STATE_TRIAL
        assert e.source.type == es.SOURCE_TYPE_SUBSCRIPTION
        assert e.source.id == "sub-trial"
        assert e.source.store == common_pb2.STORE_APP_STORE
        assert e.plan_id == "premium_individual"
        period_end = NOW + timedelta(days=20)
        assert e.expires_at.ToDatetime().replace(tzinfo=NOW.tzinfo) == period_end
        assert e.valid_until.ToDatetime().replace(tzinfo=NOW.tzinfo) == period_end

    def test_active_user_quota(self, harness: Harness) -> None:
        e = get(harness, "demo-active", "audiobook_hours")
        assert e.granted
        assert e.feature_kind == es.FEATURE_KIND_QUOTA
        assert e.quota_value == 15
        assert e.state == es.ENTITLEMENT_STATE_ACTIVE

    def test_grace_period_keeps_access_until_grace_end(self, harness: Harness) -> None:
        e = get(harness, "demo-grace", "ad_free_playback")
        assert e.granted
        assert e.state == es.ENTITLEMENT_STATE_GRACE_PERIOD
        grace_end = NOW + timedelta(days=5)
        assert e.valid_until.ToDatetime().replace(tzinfo=NOW.tzinfo) == grace_end

    def test_canceled_keeps_access_until_period_end(self, harness: Harness) -> None:
        e = get(harness, "demo-canceled", "on_demand_playback")
        assert e.granted
        assert e.state == es.ENTITLEMENT_STATE_CANCELED_UNTIL_PERIOD_END

    def test_lapsed_user_is_denied_as_expired(self, harness: Harness) -> None:
        e = get(harness, "demo-lapsed", "ad_free_playback")
        assert not e.granted
        assert e.denial_reason == es.DENIAL_REASON_EXPIRED

    def test_on_hold_user_is_denied(self, harness: Harness) -> None:
        e = get(harness, "demo-on-hold", "ad_free_playback")
        assert not e.granted
        assert e.denial_reason == es.DENIAL_REASON_SUBSCRIPTION_ON_HOLD

    def test_family_manager_and_member(self, harness: Harness) -> None:
        manager = get(harness, "demo-family-manager", "audiobook_hours")
        assert manager.granted
        assert manager.quota_value == 15
        member = get(harness, "demo-family-member", "offline_downloads")
        assert member.granted
        assert member.source.type == es.SOURCE_TYPE_HOUSEHOLD
        # The household the manager created (its id derived from the create request).
        managed = harness.running.app.repository.load("demo-family-manager").account
        assert member.source.id == managed.memberships[0].household_id
        assert member.plan_id == "premium_family"
        audiobooks = get(harness, "demo-family-member", "audiobook_hours")
        assert not audiobooks.granted
        assert audiobooks.denial_reason == es.DENIAL_REASON_HOUSEHOLD_ROLE

    def test_promotional_grant(self, harness: Harness) -> None:
        e = get(harness, "demo-promo", "high_fidelity_audio")
        assert e.granted
        assert e.source.type == es.SOURCE_TYPE_GRANT
        # The grant the demo's GrantEntitlement wrote (its id derived from the request).
        (grant,) = harness.running.app.repository.load("demo-promo").account.grants
        assert (e.source.id, grant.feature_id) == (grant.grant_id, "high_fidelity_audio")
        assert not get(harness, "demo-promo", "offline_downloads").granted


class TestListAndBatch:
    def test_list_entitlements_covers_the_catalog_in_order(self, harness: Harness) -> None:
        response = harness.entitlements.ListEntitlements(
            es.ListEntitlementsRequest(user_id="demo-active"), timeout=5
        )
        features = [e.feature_id for e in response.entitlements]
        assert features == list(harness.running.reads.catalog.features)
        granted = {e.feature_id for e in response.entitlements if e.granted}
        assert "high_fidelity_audio" in granted
        assert "basic_playback" in granted
        assert "family_content_filter" not in granted

    def test_batch_answers_in_request_order(self, harness: Harness) -> None:
        queries = [
            es.EntitlementQuery(user_id="demo-free", feature_id="offline_downloads"),
            es.EntitlementQuery(user_id="demo-active", feature_id="offline_downloads"),
            es.EntitlementQuery(user_id="demo-family-member", feature_id="audiobook_hours"),
            es.EntitlementQuery(user_id="demo-active", feature_id="audiobook_hours"),
        ]
        response = harness.entitlements.BatchGetEntitlements(
            es.BatchGetEntitlementsRequest(queries=queries), timeout=5
        )
        assert [(e.user_id, e.feature_id, e.granted) for e in response.entitlements] == [
            ("demo-free", "offline_downloads", False),
            ("demo-active", "offline_downloads", True),
            ("demo-family-member", "audiobook_hours", False),
            ("demo-active", "audiobook_hours", True),
        ]

    def test_batch_of_100_is_accepted(self, harness: Harness) -> None:
        queries = [
            es.EntitlementQuery(user_id=f"user-{i}", feature_id="shuffle_play") for i in range(100)
        ]
        response = harness.entitlements.BatchGetEntitlements(
            es.BatchGetEntitlementsRequest(queries=queries), timeout=5
        )
        assert len(response.entitlements) == 100

    def test_batch_over_100_is_invalid(self, harness: Harness) -> None:
        queries = [
            es.EntitlementQuery(user_id=f"user-{i}", feature_id="shuffle_play") for i in range(101)
        ]
        with pytest.raises(grpc.RpcError) as raised:
            harness.entitlements.BatchGetEntitlements(
                es.BatchGetEntitlementsRequest(queries=queries), timeout=5
            )
        assert bad_request_fields(raised.value) == ["queries"]

    def test_batch_names_each_bad_query(self, harness: Harness) -> None:
        queries = [
            es.EntitlementQuery(user_id="demo-free", feature_id="shuffle_play"),
            es.EntitlementQuery(user_id="", feature_id="shuffle_play"),
            es.EntitlementQuery(user_id="demo-free", feature_id="teleportation"),
        ]
        with pytest.raises(grpc.RpcError) as raised:
            harness.entitlements.BatchGetEntitlements(
                es.BatchGetEntitlementsRequest(queries=queries), timeout=5
            )
        assert bad_request_fields(raised.value) == ["queries[1].user_id", "queries[2].feature_id"]

    def test_a_batch_of_100_bad_queries_keeps_its_error_within_client_limits(
        self, harness: Harness
    ) -> None:
        """100 long bad ids: the error still reaches the client as INVALID_ARGUMENT (the
        first violations and a count), not as RESOURCE_EXHAUSTED "received metadata size
        exceeds soft limit" (grpc clients accept 8 KiB of trailers by default)."""
        queries = [
            es.EntitlementQuery(user_id=f"u-{i}", feature_id="x" * 60 + f"{i:04d}")
            for i in range(100)
        ]
        for _ in range(5):
            with pytest.raises(grpc.RpcError) as raised:
                harness.entitlements.BatchGetEntitlements(
                    es.BatchGetEntitlementsRequest(queries=queries), timeout=5
                )
            fields = bad_request_fields(raised.value)
            assert fields == [f"queries[{i}].feature_id" for i in range(10)]
            assert "and 95 more" in str(raised.value.details())


class TestGetOffers:
    def test_new_user_sees_trials_and_web_discount_best_first(self, harness: Harness) -> None:
        response = offers(harness, "demo-free", "US", WEB)
        ids = [o.offer_id for o in response.offers]
        assert ids[:2] == ["premium-individual-trial-1m", "premium-family-trial-1m"]
        assert "premium-individual-holiday-2026" in ids
        trial = response.offers[0]
        assert trial.kind == offer_service_pb2.OFFER_KIND_FREE_TRIAL
        assert trial.offer_price.amount_minor == 0
        assert trial.regular_price.amount_minor == 1199
        assert trial.regular_price.currency_code == "USD"
        assert trial.offer_group == "trial"
        # The answer changes by itself at the latest when the holiday window closes.
        assert response.HasField("valid_until")
        assert reasons(response)["premium-individual-winback-3m"] == (
            "INELIGIBILITY_REASON_NEVER_SUBSCRIBED"
        )

    def test_local_price_and_currency(self, harness: Harness) -> None:
        response = offers(harness, "demo-free", "SE", IOS)
        ids = [o.offer_id for o in response.offers]
        assert "premium-individual-holiday-2026" not in ids  # web and desktop only
        assert reasons(response)["premium-individual-holiday-2026"] == (
            "INELIGIBILITY_REASON_PLATFORM_NOT_ELIGIBLE"
        )
        trial = next(o for o in response.offers if o.offer_id == "premium-individual-trial-1m")
        assert trial.regular_price.currency_code == "SEK"
        assert trial.regular_price.amount_minor == 13900

    def test_trialing_user_gets_no_second_trial(self, harness: Harness) -> None:
        response = offers(harness, "demo-trial", "SE", WEB)
        assert not any(o.offer_group == "trial" for o in response.offers)
        assert reasons(response)["premium-individual-trial-1m"] == (
            "INELIGIBILITY_REASON_HAD_PREMIUM_BEFORE"
        )

    def test_lapsed_user_gets_winback(self, harness: Harness) -> None:
        response = offers(harness, "demo-lapsed", "US", WEB)
        ids = [o.offer_id for o in response.offers]
        assert "premium-individual-winback-3m" in ids
        assert "premium-individual-trial-1m" not in ids

    def test_verified_student_gets_student_offer(self, harness: Harness) -> None:
        student = [o.offer_id for o in offers(harness, "demo-student", "US", WEB).offers]
        assert "premium-student-12m" in student
        other = reasons(offers(harness, "demo-free", "US", WEB))
        assert other["premium-student-12m"] == "INELIGIBILITY_REASON_STUDENT_NOT_VERIFIED"

    def test_family_member_sees_no_new_subscriber_offers(self, harness: Harness) -> None:
        response = offers(harness, "demo-family-member", "SE", WEB)
        assert not response.offers
        assert reasons(response)["premium-individual-trial-1m"] == (
            "INELIGIBILITY_REASON_HAD_PREMIUM_BEFORE"
        )

    def test_experiment_offer_reports_arm(self, harness: Harness) -> None:
        seen_arms = set()
        for i in range(40):
            response = offers(harness, f"prospect-{i}", "US", WEB)
            duo = [o for o in response.offers if o.offer_id == "premium-duo-intro-3m"]
            if duo:
                assert duo[0].experiment_id == "duo-intro-price-2026"
                seen_arms.add(duo[0].experiment_arm)
            else:
                assert reasons(response)["premium-duo-intro-3m"] == (
                    "INELIGIBILITY_REASON_EXPERIMENT_ARM"
                )
                seen_arms.add("control")
        assert seen_arms == {"control", "intro-price"}

    def test_unsold_market_is_not_an_error(self, harness: Harness) -> None:
        response = offers(harness, "demo-free", "ZZ", WEB)
        assert not response.offers
        assert set(reasons(response).values()) == {"INELIGIBILITY_REASON_MARKET_NOT_ELIGIBLE"}

    def test_ineligible_offers_only_when_asked(self, harness: Harness) -> None:
        response = harness.offers.GetOffers(
            offer_service_pb2.GetOffersRequest(user_id="demo-free", market="US", platform=WEB),
            timeout=5,
        )
        assert response.offers
        assert not response.ineligible_offers


class TestBadInput:
    @pytest.mark.parametrize(
        ("user_id", "feature_id", "fields"),
        [
            ("", "shuffle_play", ["user_id"]),
            ("u" * 129, "shuffle_play", ["user_id"]),
            ("bad\x00id", "shuffle_play", ["user_id"]),
            ("demo-free", "", ["feature_id"]),
            ("demo-free", "teleportation", ["feature_id"]),
            ("", "teleportation", ["user_id", "feature_id"]),
        ],
    )
    def test_get_entitlement(
        self, harness: Harness, user_id: str, feature_id: str, fields: list[str]
    ) -> None:
        with pytest.raises(grpc.RpcError) as raised:
            harness.entitlements.GetEntitlement(
                es.GetEntitlementRequest(user_id=user_id, feature_id=feature_id), timeout=5
            )
        assert bad_request_fields(raised.value) == fields

    @pytest.mark.parametrize(
        ("market", "platform", "fields"),
        [
            ("se", WEB, ["market"]),
            ("SWE", WEB, ["market"]),
            ("", WEB, ["market"]),
            ("SE", common_pb2.PLATFORM_UNSPECIFIED, ["platform"]),
            ("SE", 99, ["platform"]),
        ],
    )
    def test_get_offers(
        self, harness: Harness, market: str, platform: int, fields: list[str]
    ) -> None:
        with pytest.raises(grpc.RpcError) as raised:
            harness.offers.GetOffers(
                offer_service_pb2.GetOffersRequest(
                    user_id="demo-free",
                    market=market,
                    platform=platform,  # type: ignore[arg-type]
                ),
                timeout=5,
            )
        assert bad_request_fields(raised.value) == fields

    def test_malformed_consistency_token(self, harness: Harness) -> None:
        with pytest.raises(grpc.RpcError) as raised:
            harness.entitlements.ListEntitlements(
                es.ListEntitlementsRequest(
                    user_id="demo-free",
                    consistency=common_pb2.ReadConsistency(consistency_token="not-a-token!"),
                ),
                timeout=5,
            )
        assert bad_request_fields(raised.value) == ["consistency.consistency_token"]
