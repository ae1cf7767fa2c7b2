"""The idempotent write (AccountRepository.apply), once for every backend.

`IdempotentWrite` holds what one write asks for and decides, inside a backend's
transaction, what to read and what to write:

1. read the user's state and the request kept under the write's key, if any;
2. a key seen before: its fingerprint must match (else IdempotencyConflict), and the kept
   response and version are the answer, nothing written (a replay);
3. else `mutate(current)`; its response is kept as canonical JSON text (so a first answer
   and its replays are equal, whichever backend);
4. a write that changes nothing keeps the key at the current version and writes nothing
   else; otherwise the state is stored at version + 1, its changes are published to the
   feed (storage.feed.changes_of), the key is kept with that version and the history
   entries are appended.

A backend derives from `AppliesWrites`, which is its `apply`, and supplies only how to
run one write in its own transaction (`_run_write`), through a `WriteTransaction` bound to
one attempt of that transaction (a backend may run the write again after an abort: every
step above is repeated from the read, and `mutate` is pure). Whatever a step raises
aborts the backend's transaction and propagates unchanged.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from service.domain.account import AccountState
from service.domain.errors import IdempotencyConflict
from storage.feed import Change, changes_of
from storage.repository import AccountMutation, Applied, HistoryEntry, IdempotencyKey
from storage.rows import dump_response, load_response, utc


@dataclass(frozen=True, slots=True)
class Replay:
    """What the store kept of a write request, as a replay of it reads it back: the
    request's fingerprint, its response (canonical JSON text, storage.rows.dump_response)
    and the user's version it answered with."""

    fingerprint: str
    response: str
    version: int


@dataclass(frozen=True, slots=True)
class KeptRequest:
    """A write request as the store keeps it under (user, key.kind, key.id)."""

    key: IdempotencyKey
    response: str  # canonical JSON text
    version: int  # the user's version it answered with
    recorded_at: datetime

    def replay(self) -> Replay:
        return Replay(self.key.fingerprint, self.response, self.version)


class WriteTransaction(Protocol):
    """One attempt of a backend's read-write transaction, as IdempotentWrite uses it.
    Every method reads or writes in that transaction; nothing is visible to others before
    the backend commits it."""

    def read(self, user_id: str, key: IdempotencyKey) -> tuple[AccountState, Replay | None]:
        """The user's current state (`AccountState.new` for a user never stored) and what
        was kept of the request under (user, key.kind, key.id), if any."""
        ...

    def write_account(self, current: AccountState, stored: AccountState) -> None:
        """Stores `stored` as is (version included) in place of `current`, the state
        `read` returned."""
        ...

    def publish(self, user_id: str, changes: Sequence[Change]) -> None:
        """Appends `changes`, made by the write of `user_id`, to the change feed."""
        ...

    def keep_request(self, user_id: str, request: KeptRequest) -> None:
        """Keeps `request` under (user, key.kind, key.id)."""
        ...

    def append_history(self, user_id: str, entries: Sequence[HistoryEntry]) -> None:
        """Appends the history entries of one write, in order (all at one version)."""
        ...


@dataclass(frozen=True, slots=True)
class IdempotentWrite:
    """One AccountRepository.apply call. Made before the backend's transaction starts:
    a `recorded_at` the store cannot keep (naive) fails there, before anything runs."""

    user_id: str
    key: IdempotencyKey
    mutate: AccountMutation
    recorded_at: datetime

    def __post_init__(self) -> None:
        utc(self.recorded_at)  # raises ValueError for a naive time

    def run(self, transaction: WriteTransaction) -> Applied:
        """The write in `transaction` (see the module docstring); the backend commits."""
        user_id, key, recorded_at = self.user_id, self.key, self.recorded_at
        current, seen = transaction.read(user_id, key)
        if seen is not None:
            if seen.fingerprint != key.fingerprint:
                raise IdempotencyConflict(f"{key.kind} id reused with another request")
            return Applied(current, seen.version, load_response(seen.response), replayed=True)
        # Whatever `mutate` raises propagates unchanged (and aborts the transaction).
        mutation = self.mutate(current)
        response = dump_response(mutation.response)
        if mutation.state is None and current.version > 0:
            # No change: the key is kept at the current version, nothing else written
            # (history entries are numbered by version: none may join an old one).
            kept = KeptRequest(key, response, current.version, recorded_at)
            transaction.keep_request(user_id, kept)
            return Applied(current, current.version, load_response(response), replayed=False)
        # A user never stored needs their row to keep the key with: stored unchanged.
        desired = current if mutation.state is None else mutation.state
        version = current.version + 1
        stored = dataclasses.replace(desired, user_id=user_id, version=version)
        transaction.write_account(current, stored)
        transaction.publish(user_id, changes_of(current, stored))
        transaction.keep_request(user_id, KeptRequest(key, response, version, recorded_at))
        transaction.append_history(
            user_id,
            [
                HistoryEntry(d.kind, d.reference, d.effective_at, recorded_at, version, d.summary)
                for d in mutation.history
            ],
        )
        # Through JSON, like a replay, so the first answer and its replays are equal.
        return Applied(stored, version, load_response(response), replayed=False)


class AppliesWrites(abc.ABC):
    """AccountRepository.apply for a backend: the write made once (IdempotentWrite) and
    run in the backend's transaction."""

    def apply(
        self,
        user_id: str,
        key: IdempotencyKey,
        mutate: AccountMutation,
        recorded_at: datetime,
    ) -> Applied:
        """See AccountRepository.apply."""
        return self._run_write(IdempotentWrite(user_id, key, mutate, recorded_at))

    @abc.abstractmethod
    def _run_write(self, write: IdempotentWrite) -> Applied:
        """`write.run(transaction)` in one transaction of the backend (committed when it
        returns; re-run from the start when the backend retries one), its result."""
