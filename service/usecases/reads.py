"""The read use cases: validate, get the user's state (cache or store), decide."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from service.domain.account import UserState
from service.domain.catalog import Catalog
from service.domain.decisions import (
    EntitlementDecision,
    OfferDecisions,
    decide_entitlement,
    decide_offers,
)
from service.domain.errors import DeadlineExceeded, FieldViolation, InvalidRequest, StoreUnavailable
from service.domain.rules import Platform
from service.domain.validation import (
    MAX_BATCH_QUERIES,
    check_feature_id,
    check_market,
    check_user_id,
)
from service.usecases.cache import CachedUser, UserStateCache
from service.usecases.clock import Clock, utc_now
from service.usecases.single_flight import SingleFlight
from service.usecases.store_calls import StoreCalls, within_store_budget
from service.usecases.tokens import ConsistencyToken, check_token, household_behind
from storage.repository import AccountRepository

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Consistency:
    """How fresh a read must be (see ReadConsistency in the protos)."""

    token: str = ""
    full: bool = False


@dataclass(frozen=True, slots=True)
class Answer(Generic[T]):
    value: T
    # Computed from cached state past its freshness because the store failed or was too
    # slow (stale-if-error); see Settings.max_staleness_seconds.
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Decisions for a user's features, with the version of the state they came from."""

    decisions: tuple[EntitlementDecision, ...]
    version: int
    stale: bool


@dataclass(frozen=True, slots=True)
class CachePolicy:
    # The most one store call may take within the RPC's budget.
    store_timeout_seconds: float = 0.5
    # How long past freshness cached state may be served when the store fails; 0: never.
    max_staleness_seconds: float = 300.0


class ReadService:
    def __init__(
        self,
        catalog: Catalog,
        repository: AccountRepository,
        cache: UserStateCache,
        clock: Clock = utc_now,
        policy: CachePolicy = CachePolicy(),
        store: StoreCalls | None = None,
        stale_floor: Callable[[str], int | None] | None = None,
    ) -> None:
        self.catalog = catalog
        # For a token-less miss: None (read strongly), or the version a bounded-staleness
        # read must reach (service.usecases.stale_reads). None here: always strong.
        self._stale_floor = stale_floor
        self._repository = repository
        self._cache = cache
        self._clock = clock
        self._policy = policy
        self._store = store or StoreCalls(threads=4)
        self._loads = SingleFlight[tuple[UserState, float]]()
        # Stale loads are shared only among token-less reads: a read that must see
        # writes before it arrived never joins one.
        self._stale_loads = SingleFlight[tuple[UserState, float]]()
        self._unseen_decisions: dict[str, EntitlementDecision] = {}

    @property
    def single_flight_waits(self) -> int:
        """Store reads a caller did not start because it shared another caller's."""
        return self._loads.waits

    async def get_entitlement(
        self, user_id: str, feature_id: str, consistency: Consistency = Consistency()
    ) -> Answer[EntitlementDecision]:
        violations: list[FieldViolation] = []
        check_user_id(user_id, "user_id", violations)
        check_feature_id(self.catalog, feature_id, "feature_id", violations)
        token = check_token(consistency.token, "consistency.consistency_token", violations)
        if violations:
            raise InvalidRequest(violations)
        entry = await self._user(user_id, token, consistency.full)
        return Answer(self._decide(entry, feature_id, self._clock()), entry.stale)

    async def list_entitlements(
        self, user_id: str, consistency: Consistency = Consistency()
    ) -> Answer[list[EntitlementDecision]]:
        violations: list[FieldViolation] = []
        check_user_id(user_id, "user_id", violations)
        token = check_token(consistency.token, "consistency.consistency_token", violations)
        if violations:
            raise InvalidRequest(violations)
        entry = await self._user(user_id, token, consistency.full)
        now = self._clock()
        decisions = [self._decide(entry, feature_id, now) for feature_id in self.catalog.features]
        return Answer(decisions, entry.stale)

    async def batch_get_entitlements(
        self, queries: Sequence[tuple[str, str]], consistency: Consistency = Consistency()
    ) -> Answer[list[EntitlementDecision]]:
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
                entry = entries[user_id] = await self._user(user_id, token, consistency.full)
            decisions.append(self._decide(entry, feature_id, now))
        return Answer(decisions, any(entry.stale for entry in entries.values()))

    async def get_offers(
        self,
        user_id: str,
        market: str,
        platform: Platform | None,
        consistency: Consistency = Consistency(),
    ) -> Answer[OfferDecisions]:
        violations: list[FieldViolation] = []
        check_user_id(user_id, "user_id", violations)
        check_market(market, "market", violations)
        if platform is None:
            violations.append(FieldViolation("platform", "must be a known platform"))
        token = check_token(consistency.token, "consistency.consistency_token", violations)
        if violations or platform is None:
            raise InvalidRequest(violations)
        entry = await self._user(user_id, token, consistency.full)
        now = self._clock()
        key = (market, platform)
        decisions = entry.offer_answer(key)
        if decisions is None or (
            decisions.valid_until is not None and now >= decisions.valid_until
        ):
            decisions = decide_offers(self.catalog, entry.state, market, platform, now)
            # Only markets of the catalog: any well-formed code is accepted, and the memo
            # must stay small (at most markets x platforms answers per user).
            if market in self.catalog.markets:
                entry.remember_offers(key, decisions)
        return Answer(decisions, entry.stale)

    async def snapshot(
        self, user_id: str, feature_ids: Sequence[str], min_version: int = 0
    ) -> Snapshot:
        """The decisions of `feature_ids` (validated by the caller) for the user, from
        state at least `min_version` new, with that state's version (for watches)."""
        entry = await self._state_of(user_id, min_version, None, False)
        now = self._clock()
        decisions = tuple(self._decide(entry, feature_id, now) for feature_id in feature_ids)
        return Snapshot(decisions, entry.state.account.version, entry.stale)

    async def _user(self, user_id: str, token: ConsistencyToken | None, full: bool) -> CachedUser:
        """The user's state for a read with `token` (see _state_of)."""
        if token is not None and token.applies_to(user_id):
            return await self._state_of(user_id, token.version, None, full)
        # Another user's token may be the manager's of the user's household: the state
        # must then hold at least that manager version (tokens.household_behind).
        return await self._state_of(user_id, 0, token, full)

    async def _state_of(
        self,
        user_id: str,
        min_version: int,
        manager_token: ConsistencyToken | None,
        full: bool,
    ) -> CachedUser:
        """The user's state, at least `min_version` new: from the cache when fresh enough
        (on the event loop, no thread), else from the store in a store thread (one read
        for concurrent misses of the same user), else - when the store fails or is too
        slow - from cache past its freshness within max_staleness, marked stale."""
        if not full:
            entry = self._cache.get(user_id, min_version)
            if entry is not None and not household_behind(manager_token, entry.state):
                return entry
        # A read that must see every write before it arrived (a token's, or a
        # full-consistency read) shares only a store read begun after it arrived:
        # concurrent fresh reads of a user cost one store read, and a token newer than
        # anything stored (forged) costs no more than any other read. A read after a
        # change of the user (a write, or the change feed) likewise shares no read begun
        # before the change.
        fresh = min_version > 0 or full or manager_token is not None
        started_after = time.monotonic() if fresh else self._cache.changed_at(user_id)
        floor = None if fresh or self._stale_floor is None else self._stale_floor(user_id)

        def load(seconds: float | None) -> Awaitable[tuple[UserState, float]]:
            return self._shared_load(user_id, seconds, started_after, floor)

        try:
            state, loaded_since = await within_store_budget(
                self._policy.store_timeout_seconds, load
            )
        except (StoreUnavailable, DeadlineExceeded) as error:
            if not full and self._policy.max_staleness_seconds > 0:
                stale = self._cache.get_stale(
                    user_id, min_version, self._policy.max_staleness_seconds
                )
                if stale is not None and not household_behind(manager_token, stale.state):
                    # Counted (CacheStats.stale_served, exported as a metric), not
                    # logged per call: an outage would write a line per RPC.
                    log.debug("store failed (%s); serving stale cached state", error)
                    return stale
            raise  # StoreUnavailable, or DeadlineExceeded when the RPC's time ran out
        return self._cache.put(state, loaded_since)

    async def _shared_load(
        self, user_id: str, seconds: float | None, started_after: float, floor: int | None
    ) -> tuple[UserState, float]:
        """One store read for all concurrent misses of the user (begun at `started_after`
        or later), and when it began; each waits at most `seconds` (its own budget). With
        a `floor`, a bounded-staleness read at least that new (shared only with others
        that accept one)."""

        async def load() -> tuple[UserState, float]:
            began = time.monotonic()
            if floor is None:
                return await self._store.run(seconds, self._repository.load, user_id), began
            state = await self._store.run(seconds, self._load_stale, user_id, floor)
            return state, began

        flights = self._loads if floor is None else self._stale_loads
        try:  # asyncio.timeout: wait_for can swallow a cancellation (see store_calls)
            async with asyncio.timeout(seconds):
                return await flights.do(user_id, load, started_after=started_after)
        except TimeoutError as error:
            raise DeadlineExceeded("waited too long for the store read") from error

    def _load_stale(self, user_id: str, floor: int) -> UserState:
        return self._repository.load(user_id, min_version=floor, stale_ok=True)

    def _decide(self, entry: CachedUser, feature_id: str, now: datetime) -> EntitlementDecision:
        state = entry.state
        if state.account.version == 0:
            return self._decide_unseen(state, feature_id, now)
        decision = entry.decision(feature_id)
        if decision is None or (decision.valid_until is not None and now >= decision.valid_until):
            decision = decide_entitlement(self.catalog, state, feature_id, now)
            entry.remember_decision(feature_id, decision)
        return decision

    def _decide_unseen(
        self, state: UserState, feature_id: str, now: datetime
    ) -> EntitlementDecision:
        """A user the store has never seen (version 0: no subscription, grant or
        household) decides like every other such user: one decision per feature is shared
        by all of them instead of one memoised per cache entry (free users are most users,
        and a memoised decision costs ~300 bytes per entry)."""
        shared = self._unseen_decisions.get(feature_id)
        if shared is None or (shared.valid_until is not None and now >= shared.valid_until):
            shared = decide_entitlement(self.catalog, state, feature_id, now)
            self._unseen_decisions[feature_id] = shared
        user_id = state.account.user_id
        return shared if shared.user_id == user_id else dataclasses.replace(shared, user_id=user_id)
