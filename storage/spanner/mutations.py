"""The writes of the Spanner backend: mutations buffered in a read-write transaction.

Every mutation is a keyed blind write (the child tables' rows replaced, the request row
and the history rows keyed by (user, version, index)), so a transaction re-run after
ABORTED, or a commit sent again, writes the same rows and never a duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from google.cloud.spanner_v1 import KeyRange, KeySet
from google.cloud.spanner_v1.transaction import Transaction

from service.domain.account import AccountState
from storage.feed import changes_of
from storage.repository import HistoryDraft, IdempotencyKey
from storage.rows import CHILD_TABLES, HISTORY, PROCESSED_REQUESTS, USER_ID, USERS
from storage.spanner import changes
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
    deleted (if there were any) and written again; and publishes the write's changes to
    the change feed (storage.feed.changes_of), in the same transaction."""
    user_id = stored.user_id
    transaction.insert_or_update(
        name(USERS.name),
        columns=_USER_WRITE_COLUMNS,
        values=[(user_id, *CODEC.user_row(stored))],
    )
    for table in CHILD_TABLES:
        if table.items(current):
            transaction.delete(name(table.name), _user_rows(user_id))
        rows = table.rows(CODEC, stored)
        if rows:
            # `replace` rather than `insert`: the same rows again if a commit is re-sent.
            transaction.replace(
                name(table.name), columns=_CHILD_WRITE_COLUMNS[table.name], values=rows
            )
    changes.publish(transaction, user_id, changes_of(current, stored))


def write_request(
    transaction: Transaction,
    user_id: str,
    key: IdempotencyKey,
    response: str,
    version: int,
    recorded_at: datetime,
) -> None:
    transaction.insert_or_update(
        name(PROCESSED_REQUESTS.name),
        columns=_REQUEST_WRITE_COLUMNS,
        values=[(user_id, *CODEC.request_row(key, response, version, recorded_at))],
    )


def append_history(
    transaction: Transaction,
    user_id: str,
    drafts: Sequence[HistoryDraft],
    version: int,
    recorded_at: datetime,
) -> None:
    if not drafts:
        return
    rows: list[tuple[Any, ...]] = []
    for index, draft in enumerate(drafts):
        values = CODEC.history_row(draft, version, recorded_at)
        row = dict(zip(HISTORY.column_names, values, strict=True))
        row.update({USER_ID: user_id, "seq": index})
        rows.append(tuple(row[column] for column in _HISTORY_WRITE))
    transaction.insert_or_update(name(HISTORY.name), columns=_HISTORY_WRITE_COLUMNS, values=rows)
