"""The write use cases of every area, over one WriteCore."""

from __future__ import annotations

from service.domain.catalog import Catalog
from service.usecases.cache import UserStateCache
from service.usecases.clock import Clock, utc_now
from service.usecases.store_calls import StoreCalls
from service.usecases.writes.core import WriteCore
from service.usecases.writes.grants import Grants
from service.usecases.writes.households import Households
from service.usecases.writes.redemption import Redemptions
from service.usecases.writes.students import StudentVerifications
from service.usecases.writes.subscription_events import SubscriptionEvents
from storage.repository import AccountRepository


class WriteService:
    """events.record, grants.grant and .revoke, redemptions.redeem, households.create,
    .add_member and .remove_member, students.record and .revoke: each a coroutine that
    takes its command and returns its answer."""

    def __init__(
        self,
        catalog: Catalog,
        repository: AccountRepository,
        cache: UserStateCache,
        clock: Clock = utc_now,
        write_timeout_seconds: float = 2.0,
        store: StoreCalls | None = None,
    ) -> None:
        core = WriteCore(catalog, repository, cache, clock, write_timeout_seconds, store)
        self.catalog = catalog
        self.events = SubscriptionEvents(core)
        self.grants = Grants(core)
        self.redemptions = Redemptions(core)
        self.households = Households(core)
        self.students = StudentVerifications(core)
