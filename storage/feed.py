"""The change feed: which users' state each committed write changed, in commit order.

Every write that stores a user's state publishes, in the same transaction, a `Change`
for that user (with the new version) and one for each member of a household the user
manages (a member's state includes the manager's subscriptions, so it changed too). Every
worker of every replica follows the feed and drops what it cached for those users
(service.usecases.freshness), so a write is seen everywhere within a poll interval, not
a cache TTL.

A backend that has a feed implements `ChangeFeed` besides `AccountRepository`. Positions
are opaque strings of the backend; a reader keeps the one of its last batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from service.domain.account import AccountState, HouseholdRole

# How many changes a reader asks for at once; a full batch is followed at once by the next.
BATCH_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Change:
    user_id: str
    # The user's version after the write; None when what changed is state derived for
    # this user (a household member, when the manager's state changed): whatever is
    # cached for them is out of date.
    version: int | None


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    # Oldest first; empty when nothing was committed after the asked position.
    changes: tuple[Change, ...]
    # The position to read from next.
    position: str
    # True when changes after the asked position are no longer in the feed (the reader
    # fell further behind than the feed keeps, or the store was replaced): the reader
    # cannot know what changed and must drop everything it cached.
    gap: bool = False


@runtime_checkable
class ChangeFeed(Protocol):
    def feed_position(self) -> str:
        """The position after the newest change committed so far: a new reader starts
        here (it has cached nothing yet)."""
        ...

    def read_changes(self, after: str, limit: int = BATCH_LIMIT) -> ChangeBatch:
        """Up to `limit` changes committed after position `after`, oldest first. Raises
        StoreUnavailable (or DeadlineExceeded within a budget) like any store call."""
        ...


def changes_of(previous: AccountState, stored: AccountState) -> list[Change]:
    """What a write from `previous` to `stored` publishes: the user at the new version,
    and every member seated in a household the user manages before or after the write
    (a member who just left must drop the household too)."""
    changes = [Change(stored.user_id, stored.version)]
    seen: set[str] = set()
    for account in (previous, stored):
        for membership in account.memberships:
            member = membership.member_user_id
            if membership.role is HouseholdRole.MANAGER and member and member not in seen:
                seen.add(member)
                changes.append(Change(member, None))
    return changes
