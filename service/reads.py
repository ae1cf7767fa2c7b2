"""The read use cases: validate, get the user's state (cache or store), decide."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from service.cache import CachedUser, UserStateCache
from service.domain.catalog import Catalog
from service.domain.decisions import (
    EntitlementDecision,
    OfferDecisions,
    decide_entitlement,
    decide_offers,
)
from service.domain.errors import FieldViolation, InvalidRequest
from service.domain.rules import Platform
from service.tokens import ConsistencyToken
from service.validation import (
    MAX_BATCH_QUERIES,
    check_feature_id,
    check_market,
    check_token,
    check_user_id,
)
from storage.repository import AccountRepository

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Consistency:
    """How fresh a read must be (see ReadConsistency in the protos)."""

    token: str = ""
    full: bool = False


class ReadService:
    def __init__(
        self,
        catalog: Catalog,
        repository: AccountRepository,
        cache: UserStateCache,
        clock: Clock = utc_now,
    ) -> None:
        self.catalog = catalog
        self._repository = repository
        self._cache = cache
        self._clock = clock

    def get_entitlement(
        self, user_id: str, feature_id: str, consistency: Consistency = Consistency()
    ) -> EntitlementDecision:
        violations: list[FieldViolation] = []
        check_user_id(user_id, "user_id", violations)
        check_feature_id(self.catalog, feature_id, "feature_id", violations)
        token = check_token(consistency.token, "consistency.consistency_token", violations)
        if violations:
            raise InvalidRequest(violations)
        entry = self._user(user_id, token, consistency.full)
        return self._decide(entry, feature_id, self._clock())

    def list_entitlements(
        self, user_id: str, consistency: Consistency = Consistency()
    ) -> list[EntitlementDecision]:
        violations: list[FieldViolation] = []
        check_user_id(user_id, "user_id", violations)
        token = check_token(consistency.token, "consistency.consistency_token", violations)
        if violations:
            raise InvalidRequest(violations)
        entry = self._user(user_id, token, consistency.full)
        now = self._clock()
        return [self._decide(entry, feature_id, now) for feature_id in self.catalog.features]

    def batch_get_entitlements(
        self, queries: Sequence[tuple[str, str]], consistency: Consistency = Consistency()
    ) -> list[EntitlementDecision]:
        """Decides (user_id, feature_id) pairs in order; each user's state is read once."""
        violations: list[FieldViolation] = []
        if not queries:
            violations.append(FieldViolation("queries", "must hold at least one query"))
        elif len(queries) > MAX_BATCH_QUERIES:
            violations.append(
                FieldViolation(
                    "queries", f"at most {MAX_BATCH_QUERIES} queries, got {len(queries)}"
                )
            )
        else:
            for index, (user_id, feature_id) in enumerate(queries):
                check_user_id(user_id, f"queries[{index}].user_id", violations)
                check_feature_id(
                    self.catalog, feature_id, f"queries[{index}].feature_id", violations
                )
        token = check_token(consistency.token, "consistency.consistency_token", violations)
        if violations:
            raise InvalidRequest(violations)
        now = self._clock()
        entries: dict[str, CachedUser] = {}
        decisions = []
        for user_id, feature_id in queries:
            entry = entries.get(user_id)
            if entry is None:
                entry = entries[user_id] = self._user(user_id, token, consistency.full)
            decisions.append(self._decide(entry, feature_id, now))
        return decisions

    def get_offers(
        self,
        user_id: str,
        market: str,
        platform: Platform | None,
        consistency: Consistency = Consistency(),
    ) -> OfferDecisions:
        violations: list[FieldViolation] = []
        check_user_id(user_id, "user_id", violations)
        check_market(market, "market", violations)
        if platform is None:
            violations.append(FieldViolation("platform", "must be a known platform"))
        token = check_token(consistency.token, "consistency.consistency_token", violations)
        if violations:
            raise InvalidRequest(violations)
        assert platform is not None
        entry = self._user(user_id, token, consistency.full)
        return decide_offers(self.catalog, entry.state, market, platform, self._clock())

    def _user(self, user_id: str, token: ConsistencyToken | None, full: bool) -> CachedUser:
        min_version = token.version if token is not None and token.applies_to(user_id) else 0
        if not full:
            entry = self._cache.get(user_id, min_version)
            if entry is not None:
                return entry
        return self._cache.put(self._repository.load(user_id))

    def _decide(self, entry: CachedUser, feature_id: str, now: datetime) -> EntitlementDecision:
        decision = entry.decisions.get(feature_id)
        if decision is None or (decision.valid_until is not None and now >= decision.valid_until):
            decision = decide_entitlement(self.catalog, entry.state, feature_id, now)
            entry.decisions[feature_id] = decision
        return decision
