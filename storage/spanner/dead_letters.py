"""Dead letters on Spanner: the DeadLetters table of migration 0005 (storage.dead_letters
has the contract). Few rows, read by operators: plain queries and one read-write
transaction per change, within the call's budget like the repository's calls."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.cloud.spanner_v1 import param_types

from storage.dead_letters import DeadLetter
from storage.spanner.client import DatabasePath, database_handle, store_call

_COLUMNS = ("Source", "DeliveryId", "Payload", "Reason", "Detail", "ReceivedAt", "Attempts",
            "ResolvedAt")  # fmt: skip
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM DeadLetters"
_KEY = {"source": param_types.STRING, "id": param_types.STRING}


def _letter(row: list[Any]) -> DeadLetter:
    return DeadLetter(
        source=row[0],
        delivery_id=row[1],
        payload=row[2],
        reason=row[3],
        detail=row[4],
        received_at=row[5],
        attempts=int(row[6]),
        resolved_at=row[7],
    )


class SpannerDeadLetters:
    def __init__(self, url: str, default_timeout: float = 5.0, endpoint: str | None = None) -> None:
        self._path = DatabasePath.parse(url)
        self._timeout = default_timeout
        self._endpoint = endpoint  # an emulator's host:port (tests)

    def keep(self, letter: DeadLetter) -> None:
        def write(transaction: Any) -> None:
            rows = list(
                transaction.execute_sql(
                    "SELECT ReceivedAt, Attempts FROM DeadLetters "
                    "WHERE Source = @source AND DeliveryId = @id",
                    params={"source": letter.source, "id": letter.delivery_id},
                    param_types=_KEY,
                )
            )
            received, attempts = (
                (rows[0][0], int(rows[0][1]) + 1)
                if rows
                else (
                    letter.received_at,
                    1,
                )
            )
            transaction.insert_or_update(
                "DeadLetters",
                columns=_COLUMNS,
                values=[
                    (letter.source, letter.delivery_id, letter.payload, letter.reason,
                     letter.detail, received, attempts, None)
                ],
            )  # fmt: skip

        with store_call(self._path, "dead letter", self._timeout):
            database_handle(self._path, self._endpoint).run_in_transaction(write)

    def _query(self, sql: str, params: dict[str, Any], types: dict[str, Any]) -> list[Any]:
        with (
            store_call(self._path, "dead letters", self._timeout),
            database_handle(self._path, self._endpoint).snapshot() as snapshot,
        ):
            return list(snapshot.execute_sql(sql, params=params, param_types=types))

    def list(self, *, include_resolved: bool = False, limit: int = 100) -> list[DeadLetter]:
        where = "" if include_resolved else " WHERE ResolvedAt IS NULL"
        rows = self._query(
            f"{_SELECT}{where} ORDER BY ReceivedAt, Source, DeliveryId LIMIT @limit",
            {"limit": limit},
            {"limit": param_types.INT64},
        )
        return [_letter(row) for row in rows]

    def get(self, source: str, delivery_id: str) -> DeadLetter | None:
        rows = self._query(
            f"{_SELECT} WHERE Source = @source AND DeliveryId = @id",
            {"source": source, "id": delivery_id},
            _KEY,
        )
        return _letter(rows[0]) if rows else None

    def resolve(self, source: str, delivery_id: str, at: datetime) -> bool:
        def write(transaction: Any) -> bool:
            count = transaction.execute_update(
                "UPDATE DeadLetters SET ResolvedAt = @at WHERE Source = @source "
                "AND DeliveryId = @id AND ResolvedAt IS NULL",
                params={"at": at, "source": source, "id": delivery_id},
                param_types={**_KEY, "at": param_types.TIMESTAMP},
            )
            return bool(count)

        with store_call(self._path, "dead letter", self._timeout):
            return bool(database_handle(self._path, self._endpoint).run_in_transaction(write))

    def open_count(self) -> int:
        rows = self._query("SELECT COUNT(*) FROM DeadLetters WHERE ResolvedAt IS NULL", {}, {})
        return int(rows[0][0])

    def close(self) -> None:
        pass
