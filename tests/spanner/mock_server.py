"""The mock Spanner server shipped in google-cloud-spanner
(google.cloud.spanner_v1.testing.mock_spanner), on a free loopback port, for the faults
the emulator cannot make: ABORTED with a chosen retry delay, UNAVAILABLE, slow answers.

It answers queries by their exact SQL text (`answer`), so tests build result sets for the
repository's own queries (storage.spanner.LOAD_QUERY...) from their declared columns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from google.cloud.spanner_v1 import (
    CommitResponse,
    ResultSet,
    ResultSetMetadata,
    StructType,
    Type,
    TypeCode,
)
from google.cloud.spanner_v1.testing import spanner_pb2_grpc
from google.cloud.spanner_v1.testing.mock_spanner import SpannerServicer
from google.protobuf import duration_pb2, struct_pb2
from google.rpc import error_details_pb2

from storage.spanner import Query
from storage.spanner.queries import CHECK_QUERY
from storage.spanner.schema import MIGRATIONS_TABLE, TABLES_QUERY, VERSIONS_QUERY, migrations

PROJECT = "mock-project"
DATABASE = f"projects/{PROJECT}/instances/mock-instance/databases/mock-db"
RETRY_INFO_KEY = "google.rpc.retryinfo-bin"


class _Status(grpc.Status):
    def __init__(
        self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[tuple[str, bytes], ...]
    ) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def status(code: grpc.StatusCode, message: str, retry_delay: float | None = None) -> grpc.Status:
    """A status for `add_error`; with `retry_delay`, RetryInfo in the trailer (the
    client then waits that long before re-running an aborted transaction)."""
    trailer: tuple[tuple[str, bytes], ...] = ()
    if retry_delay is not None:
        info = error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(nanos=int(retry_delay * 1e9))
        )
        trailer = ((RETRY_INFO_KEY, info.SerializeToString()),)
    return _Status(code, message, trailer)


ABORTED = grpc.StatusCode.ABORTED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def _value(value: object) -> struct_pb2.Value:
    """A value as Spanner encodes it in a result set."""
    if value is None:
        return struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(value, bool):
        return struct_pb2.Value(bool_value=value)
    if isinstance(value, int):
        return struct_pb2.Value(string_value=str(value))  # INT64 travels as a string
    if isinstance(value, datetime):
        text = value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        return struct_pb2.Value(string_value=text)
    if isinstance(value, str):
        return struct_pb2.Value(string_value=value)
    if isinstance(value, list | tuple):
        return struct_pb2.Value(list_value=struct_pb2.ListValue(values=[_value(v) for v in value]))
    raise TypeError(f"cannot encode {value!r}")


def _struct_array(columns: Sequence[tuple[str, int]]) -> Type:
    element = Type(
        code=TypeCode.STRUCT,
        struct_type=StructType(
            fields=[StructType.Field(name=name, type_=Type(code=code)) for name, code in columns]
        ),
    )
    return Type(code=TypeCode.ARRAY, array_element_type=element)


def query_result(query: Query, values: Sequence[Sequence[Sequence[object]]]) -> ResultSet:
    """The one row of `query`: for each of its ARRAY<STRUCT> columns, the structs as
    lists of field values (an empty list for none)."""
    assert len(values) == len(query.columns)
    metadata = ResultSetMetadata(
        row_type=StructType(
            fields=[
                StructType.Field(name=alias, type_=_struct_array(columns))
                for alias, columns in query.columns
            ]
        )
    )
    row = struct_pb2.ListValue(values=[_value(list(structs)) for structs in values])
    return ResultSet(metadata=metadata, rows=[row])


def rows_result(columns: Sequence[tuple[str, int]], rows: Sequence[Sequence[object]]) -> ResultSet:
    metadata = ResultSetMetadata(
        row_type=StructType(
            fields=[StructType.Field(name=name, type_=Type(code=code)) for name, code in columns]
        )
    )
    return ResultSet(
        metadata=metadata,
        rows=[struct_pb2.ListValue(values=[_value(v) for v in row]) for row in rows],
    )


@dataclass
class Stall:
    """Holds calls of one method until the client gives up (or `seconds` pass), and
    records what the server saw: each call's remaining deadline and whether the client
    cancelled it."""

    seconds: float
    deadlines: list[float | None] = field(default_factory=list)
    cancelled: list[bool] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def hold(self, context: grpc.ServicerContext) -> None:
        self.deadlines.append(context.time_remaining())
        end = time.monotonic() + self.seconds
        while context.is_active() and time.monotonic() < end:
            time.sleep(0.005)
        self.cancelled.append(not context.is_active())
        self.done.set()


class FaultyServicer(SpannerServicer):  # type: ignore[misc]
    """The mock servicer with stalls, a switch that fails every query, and one that
    fails every session creation and lookup with a given status (as an outage does)."""

    def __init__(self) -> None:
        super().__init__()
        self.stalls: dict[str, Stall] = {}
        self.fail_queries = False
        self.fail_sessions: grpc.StatusCode | None = None
        self._lock = threading.Lock()

    def _session_call(self, request: Any, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.requests.append(request)
        if self.fail_sessions is not None:
            context.abort(self.fail_sessions, "injected: no session")

    def CreateSession(self, request: Any, context: grpc.ServicerContext) -> Any:
        if self.fail_sessions is None:
            with self._lock:
                return super().CreateSession(request, context)
        self._session_call(request, context)

    def BatchCreateSessions(self, request: Any, context: grpc.ServicerContext) -> Any:
        if self.fail_sessions is None:
            with self._lock:
                return super().BatchCreateSessions(request, context)
        self._session_call(request, context)

    def GetSession(self, request: Any, context: grpc.ServicerContext) -> Any:
        if self.fail_sessions is None:
            with self._lock:
                return super().GetSession(request, context)
        self._session_call(request, context)

    def ExecuteStreamingSql(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        if self.fail_queries:
            with self._lock:
                self.requests.append(request)
            context.abort(grpc.StatusCode.UNAVAILABLE, "injected: spanner unreachable")
        stall = self.stalls.get("ExecuteStreamingSql")
        if stall is not None:
            stall.hold(context)
            if not context.is_active():
                return
        with self._lock:  # the mock's counters are not thread-safe
            answer = list(super().ExecuteStreamingSql(request, context))
        yield from answer

    def Commit(self, request: Any, context: grpc.ServicerContext) -> Any:
        stall = self.stalls.get("Commit")
        if stall is not None:
            stall.hold(context)
            if not context.is_active():
                return CommitResponse()  # the client is gone: nothing is committed
        with self._lock:
            return super().Commit(request, context)

    def requests_of(self, kind: str) -> list[Any]:
        return [r for r in self.requests if type(r).__name__ == kind]


@dataclass
class MockSpanner:
    server: grpc.Server
    servicer: FaultyServicer
    endpoint: str

    def answer(self, sql: str, result: ResultSet) -> None:
        self.servicer.mock_spanner.add_result(sql, result)

    def add_error(self, method: str, error: Any) -> None:
        self.servicer.mock_spanner.add_error(method, error)

    def answer_schema_checks(self) -> None:
        """Answers the repository's schema check (every migration applied) and the cheap
        check after it (`check()` once the schema was seen: a server's first store call,
        such as its change feed's, may come before the test's)."""
        self.answer(CHECK_QUERY, rows_result([("", TypeCode.INT64)], [[1]]))
        self.answer(
            TABLES_QUERY, rows_result([("TABLE_NAME", TypeCode.STRING)], [[MIGRATIONS_TABLE]])
        )
        self.answer(
            VERSIONS_QUERY,
            rows_result([("Version", TypeCode.INT64)], [[m.version] for m in migrations()]),
        )


def start_mock_spanner() -> MockSpanner:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    servicer = FaultyServicer()
    spanner_pb2_grpc.add_SpannerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return MockSpanner(server, servicer, f"127.0.0.1:{port}")
