"""RedeemOffer: a trial or offer started, atomically (two concurrent trial starts cannot
both win), idempotent on the request id."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.domain.account import AccountState, Store, Subscription, UserState
from service.domain.catalog import Catalog
from service.domain.errors import FieldViolation, InvalidRequest
from service.domain.redemption import redeem_offer
from service.domain.rules import Platform
from service.domain.validation import check_id, check_market, check_user_id
from service.usecases.tokens import issue_token
from service.usecases.writes.core import WriteCore, fingerprint
from storage.repository import HistoryDraft, IdempotencyKey, Mutation


@dataclass(frozen=True, slots=True)
class RedeemOffer:
    request_id: str
    user_id: str
    offer_id: str
    market: str
    # None: the caller's value is not one this service knows.
    platform: Platform | None
    store: Store | None
    subscription_id: str

    def validate(self, catalog: Catalog) -> tuple[Platform, Store]:
        """Raises InvalidRequest naming every bad field; the platform and store, known."""
        violations: list[FieldViolation] = []
        check_id(self.request_id, "request_id", violations)
        check_user_id(self.user_id, "user_id", violations)
        if all(o.id != self.offer_id for o in catalog.offers):
            violations.append(FieldViolation("offer_id", f"unknown offer '{self.offer_id}'"))
        check_market(self.market, "market", violations)
        if self.platform is None:
            violations.append(FieldViolation("platform", "must be a known platform"))
        if self.store is None:
            violations.append(FieldViolation("store", "must be a known store"))
        check_id(self.subscription_id, "subscription_id", violations)
        if violations or self.platform is None or self.store is None:
            raise InvalidRequest(violations)
        return self.platform, self.store


@dataclass(frozen=True, slots=True)
class RedeemAnswer:
    subscription: Subscription
    consistency_token: str


@dataclass(frozen=True, slots=True)
class RedeemReply:
    """What a redemption's key keeps: the subscription it started."""

    subscription_id: str

    def stored(self) -> dict[str, str]:
        return {"subscription_id": self.subscription_id}

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> RedeemReply:
        return cls(str(stored["subscription_id"]))


class Redemptions:
    OPERATION = "redeem"

    def __init__(self, core: WriteCore) -> None:
        self._core = core

    async def redeem(self, command: RedeemOffer) -> RedeemAnswer:
        catalog = self._core.catalog
        platform, store = command.validate(catalog)
        now = self._core.clock()
        offer_id, market = command.offer_id, command.market
        # The household (the manager's subscriptions) is read before the transaction: it
        # only refines the current plan; the once-per-group facts are the user's own rows,
        # read inside the transaction.
        household = (await self._core.load(self.OPERATION, command.user_id)).household

        def mutate(account: AccountState) -> Mutation:
            updated, subscription = redeem_offer(
                UserState(account, household),
                catalog,
                offer_id,
                market,
                platform,
                store,
                command.subscription_id,
                now,
            )
            summary = (
                f"redeemed {offer_id} in {market} on {platform.value} via {store.value}: "
                f"{subscription.subscription_id} {subscription.status.value} until "
                f"{subscription.current_period_end.isoformat()}"
            )
            return Mutation(
                state=updated,
                response=RedeemReply(command.subscription_id).stored(),
                history=(HistoryDraft("redemption", offer_id, now, summary),),
            )

        digest = fingerprint(offer_id, market, platform, store, command.subscription_id)
        key = IdempotencyKey("redeem", command.request_id, digest)
        applied = await self._core.apply(self.OPERATION, command.user_id, key, mutate, now)
        reply = RedeemReply.from_stored(applied.response)
        subscription = next(
            s for s in applied.state.subscriptions if s.subscription_id == reply.subscription_id
        )
        return RedeemAnswer(subscription, issue_token(command.user_id, applied.version))
