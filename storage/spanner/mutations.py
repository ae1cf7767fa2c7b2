"""The writes of the Spanner backend: mutations buffered in a read-write transaction, and
`Write`, the WriteTransaction (storage.apply) that reads and writes with them.

Every mutation is a keyed blind write (the child tables' rows replaced, the request row
and the history rows keyed by (user, version, index)), so a transaction re-run after
ABORTED, or a commit sent again, writes the same rows and never a duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.cloud.spanner_v1 import KeyRange, KeySet
from google.cloud.spanner_v1.transaction import Transaction

from service.domain.account import AccountState
from service.domain.deadlines import store_seconds_left
from storage.apply import KeptRequest, Replay
from storage.feed import Change
from storage.repository import HistoryEntry, IdempotencyKey
from storage.rows import CHILD_TABLES, HISTORY, PROCESSED_REQUESTS, USER_ID, USERS
from storage.spanner import changes, queries
from storage.spanner.codec import CODEC, name, names

_USER_WRITE_COLUMNS = names((USER_ID, *USERS.column_names))
_CHILD_WRITE_COLUMNS = {table.name: names(table.write_columns) for table in CHILD_TABLES}
_REQUEST_WRITE_COLUMNS = names((USER_ID, *PROCESSED_REQUESTS.column_names))
# History rows are keyed by (user, version, index in the write): the key columns first.
_HISTORY_KEY = (USER_ID, "version", "seq")
_HISTORY_WRITE = (*_HISTORY_KEY, *(n for n in HISTORY.column_names if n not in _HISTORY_KEY))
_HISTORY_WRITE_COLUMNS = names(_HISTORY_WRITE)


def _user_rows(user_id: str) -> KeySet:
    """Every row of a child table under the user (a key prefix)."""
    return KeySet(ranges=[KeyRange(start_closed=[user_id], end_closed=[user_id])])


def write_account(transaction: Transaction, current: AccountState, stored: AccountState) -> None:
    """Buffers mutations that store `stored` (version included) in place of `current`,
    the state read in this transaction: the user row, and each child table's rows
    deleted (if there were any) and written again, unless they would be the same."""
    user_id = stored.user_id
    transaction.insert_or_update(
        name(USERS.name),
        columns=_USER_WRITE_COLUMNS,
        values=[(user_id, *CODEC.user_row(stored))],
    )
    for table in CHILD_TABLES:
        rows = table.rows(CODEC, stored)
        if table.rows(CODEC, current) == rows:
            continue  # the same rows: not rewritten (a grant leaves the kept events alone)
        if table.items(current):
            transaction.delete(name(table.name), _user_rows(user_id))
        if rows:
            # `replace` rather than `insert`: the same rows again if a commit is re-sent.
            transaction.replace(
                name(table.name), columns=_CHILD_WRITE_COLUMNS[table.name], values=rows
            )


class Write:
    """The WriteTransaction of one attempt of an `apply` transaction; `tag` names its
    read (request tags)."""

    def __init__(self, transaction: Transaction, tag: str) -> None:
        self._transaction = transaction
        self._tag = tag

    def read(self, user_id: str, key: IdempotencyKey) -> tuple[AccountState, Replay | None]:
        row = queries.first_row(
            self._transaction.execute_sql(
                queries.APPLY_READ_QUERY.sql,
                params={"user_id": user_id, "kind": key.kind, "request_id": key.id},
                param_types=queries.APPLY_PARAM_TYPES,
                request_options={"request_tag": f"{self._tag}-read"},
                timeout=store_seconds_left(),
            )
        )
        return queries.account(user_id, row), queries.replay(row)

    def write_account(self, current: AccountState, stored: AccountState) -> None:
        write_account(self._transaction, current, stored)

    def publish(self, user_id: str, published: Sequence[Change]) -> None:
        changes.publish(self._transaction, user_id, published)

    def keep_request(self, user_id: str, request: KeptRequest) -> None:
        row = CODEC.request_row(request.key, request.response, request.version, request.recorded_at)
        self._transaction.insert_or_update(
            name(PROCESSED_REQUESTS.name), columns=_REQUEST_WRITE_COLUMNS, values=[(user_id, *row)]
        )

    def append_history(self, user_id: str, entries: Sequence[HistoryEntry]) -> None:
        """History rows are keyed by (user, version, index in the write)."""
        if not entries:
            return
        rows: list[tuple[Any, ...]] = []
        for index, entry in enumerate(entries):
            row = dict(zip(HISTORY.column_names, CODEC.history_row(entry), strict=True))
            row.update({USER_ID: user_id, "seq": index})
            rows.append(tuple(row[column] for column in _HISTORY_WRITE))
        self._transaction.insert_or_update(
            name(HISTORY.name), columns=_HISTORY_WRITE_COLUMNS, values=rows
        )
