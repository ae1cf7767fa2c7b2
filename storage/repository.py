"""The repository interface every storage backend implements.

A backend loads a user's whole state (with their household) in one call, and applies an
idempotent write (`apply`: every write of the service, demo seeding included) in one
transaction that increments the user's version (a write that changes nothing keeps it:
see `Mutation`). What `apply` does is written once, in storage.apply;
a backend supplies only its transaction. The same contract test suite (tests/contract)
runs unchanged against every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from service.domain.account import AccountState, HouseholdMembership, HouseholdRole, UserState


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """Identifies one write request of a user: `kind` names the write, one per write use
    case and per step of a write spanning two users ("event", "grant", "revoke", "redeem",
    "household_create", "household_seat", "household_join"... and "student_verify"; the
    use cases choose them), `id` the client-supplied event or request id, unique within its
    kind, `fingerprint` a digest of the request's content, so that a reused id with other
    content is caught."""

    kind: str
    id: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class HistoryDraft:
    """A history entry as a write produces it; the store adds version and recorded_at."""

    kind: str  # what happened: "subscription_event", "grant", "revoke", "redemption"
    reference: str  # the event id, grant id or offer id it is about
    effective_at: datetime  # when it took effect (event occurrence time, grant start...)
    summary: str  # one human-readable line for support, without personal data


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    kind: str
    reference: str
    effective_at: datetime
    recorded_at: datetime
    version: int  # the user's version after the write that appended it
    summary: str


@dataclass(frozen=True, slots=True)
class Mutation:
    """What a write function returns: the new state, the response to keep for replays of
    the same idempotency key (JSON-serialisable), and the history entries to append.

    `state=None` says the write changes nothing (a second revocation, an event that adds
    no new fact): the store keeps the key with the response, at the current version, and
    writes no state, bumps no version and appends no history (so none may be given)."""

    state: AccountState | None
    response: Mapping[str, Any]
    history: tuple[HistoryDraft, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.state is None and self.history:
            raise ValueError("a write that changes nothing appends no history")

    @classmethod
    def unchanged(cls, response: Mapping[str, Any]) -> Mutation:
        """A write that changes nothing, answered with `response`."""
        return cls(None, response)


@dataclass(frozen=True, slots=True)
class Applied:
    """The outcome of `apply`. For a replay, `state` is the current state, `version` and
    `response` those of the original write. For a write that changed nothing, `state` and
    `version` are the current ones."""

    state: AccountState
    version: int
    response: Mapping[str, Any]
    replayed: bool


# A pure function from the current state to a Mutation. Backends may call it more than
# once (a retried transaction), so it must have no side effects. Domain errors it raises
# abort the transaction and propagate unchanged.
AccountMutation = Callable[[AccountState], Mutation]


class AccountRepository(Protocol):
    def load(self, user_id: str, *, min_version: int = 0, stale_ok: bool = False) -> UserState:
        """The user's state and, if they are an active household member, the household
        with the manager's subscriptions, read consistently in one call. A user the store
        has never seen is `AccountState.new(user_id)` (version 0).

        `min_version` > 0 says the caller (holding a consistency token) accepts any state
        at least that new: a backend with cheaper stale reads (Spanner) may serve one that
        satisfies it; others read the latest state anyway. `stale_ok` says the caller
        accepts state of the backend's bounded staleness that is at least `min_version`
        new even when that is 0 (the change feed proved that nothing newer was written for
        the user within that bound: service.usecases.freshness). The default asks for the
        latest state (a strong read)."""
        ...

    def apply(
        self,
        user_id: str,
        key: IdempotencyKey,
        mutate: AccountMutation,
        recorded_at: datetime,
    ) -> Applied:
        """An idempotent write, in one transaction:
        - if the user already has a write with (key.kind, key.id): raise
          IdempotencyConflict when its fingerprint differs, else return the stored response
          and version with `replayed=True`, writing nothing;
        - else call `mutate(current)`, store its state with version = previous + 1, keep
          the key with the response and new version, append its history entries (with that
          version and `recorded_at`), and return `replayed=False`;
        - but when the mutation's state is None (no change): keep the key with the response
          and the CURRENT version, write no state and no history, and return the current
          state and version with `replayed=False`. A user the store has never seen
          (version 0) has no row to keep the key with: their unchanged state is stored as
          version 1 (still without history)."""
        ...

    def history(self, user_id: str) -> list[HistoryEntry]:
        """The user's history entries, oldest first (append-only)."""
        ...

    def check(self) -> None:
        """Raises StoreUnavailable when the store cannot serve reads (readiness)."""
        ...

    def close(self) -> None:
        """Releases connections. The repository is unusable afterwards."""
        ...


@runtime_checkable
class ChecksWrites(Protocol):
    """Optional for a backend: readiness can also ask whether writes could succeed."""

    def check_writable(self) -> None:
        """Raises StoreUnavailable when the store cannot serve reads or could not take a
        write now (read-only, disk full...), cheaply and without changing anything."""
        ...


def check_store(repository: AccountRepository, *, writable: bool = False) -> None:
    """The readiness probe of `repository`: `check()`, or with `writable` whether a write
    could succeed as well, for a backend that can tell (ChecksWrites); a backend that
    cannot (or a wrapper around one) is probed for reads only."""
    if writable and isinstance(repository, ChecksWrites):
        repository.check_writable()
    else:
        repository.check()


def household_membership(account: AccountState) -> HouseholdMembership | None:
    """The membership whose household `AccountRepository.load` returns with the user's
    state: the first current membership as a MEMBER (in the order of `memberships`)."""
    for membership in account.memberships:
        if membership.role is HouseholdRole.MEMBER and membership.left_at is None:
            return membership
    return None


@runtime_checkable
class BoundedStalenessReads(Protocol):
    """A backend whose `load(..., stale_ok=True)` reads state this many seconds old
    (Spanner); the others read the latest state whatever they are asked."""

    @property
    def stale_read_seconds(self) -> float | None:
        """How old a stale read's state is (None: stale reads are off)."""
        ...
