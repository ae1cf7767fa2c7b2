"""The RPC guard: one wrapper, applied to each method of our services when it is
registered, that does per call what every RPC needs before and after the servicer:

1. authenticate the bearer token and authorize the method under the access policy
   (deny by default), making the principal known to the handler;
2. refuse a request that is not valid protobuf with INVALID_ARGUMENT (grpcio would answer
   INTERNAL, blaming the server for the caller's bytes);
3. give the call its deadline budget (the caller's, capped by max_rpc_seconds, or that
   cap when the caller set none), which store calls inside share;
4. map use-case errors to statuses with details (service.grpc_api.errors); an unexpected
   error is logged and answered INTERNAL without details;
5. write an audit record of each call the policy marks audited;
6. admission, before any other work: a call whose deadline passed before its handler
   started is dropped DEADLINE_EXCEEDED and counted (`expired`); while the worker's
   queueing delay is above its target (service.grpc_api.overload, CoDel) a call is
   refused RESOURCE_EXHAUSTED and counted (`shed_queue_delay`); beyond `max_in_flight`
   calls in flight in this worker, likewise (`shed`); grpc's own bound
   (maximum_concurrent_rpcs) stays as a backstop above it;
7. with an observer (the metrics), count and time each call by method and status;
8. with tracing (service.grpc_api.tracing), a SERVER span per call, child of the caller's
   W3C traceparent. Off (the default), neither 7 nor 8 adds a wrapper.

One wrapper at registration rather than a chain of grpc.aio interceptors: the work is the
same, without an interceptor coroutine per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import grpc
from google.protobuf.message import DecodeError

from service.domain.deadlines import within_rpc_deadline
from service.grpc_api.audit import AuditLog, request_id_of
from service.grpc_api.auth.authentication import Authenticator, current_principal_var
from service.grpc_api.auth.credentials import Principal
from service.grpc_api.auth.policy import (
    DEFAULT_POLICY,
    AccessPolicy,
    MethodRule,
    Refusal,
    access_check,
)
from service.grpc_api.errors import status_for
from service.grpc_api.logs import request_id_var, trace_id_var

if TYPE_CHECKING:  # imported by the server only when tracing is on
    from service.grpc_api.tracing import RpcTracing

log = logging.getLogger(__name__)

Behaviour = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
StreamBehaviour = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncGenerator[Any, None]]
Admission = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], "Principal | Refusal | None"]


class MethodObserver(Protocol):
    """Counts and times the calls of one method (service.grpc_api.metrics)."""

    @property
    def started(self) -> Callable[[], None]: ...
    @property
    def observe(self) -> Callable[[float], None]: ...
    @property
    def handled(self) -> Callable[[grpc.StatusCode], None]: ...


class RpcObserver(Protocol):
    def for_method(self, method: str) -> MethodObserver: ...

    def for_stream(self, method: str) -> MethodObserver:
        """As for_method, for a server stream: `observe` takes the stream's duration."""
        ...


SHED_DETAILS = "the server is at capacity; retry with backoff"
CANCELLED = grpc.StatusCode.CANCELLED
EXPIRED_DETAILS = "the deadline passed before the server could start the call"


class OverloadSignal(Protocol):
    """Whether the worker is overloaded now (service.grpc_api.overload): read per call."""

    overloaded: bool


class _NeverOverloaded:
    overloaded = False


MALFORMED_REQUEST = Refusal(
    grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid protobuf message"
)


class _Malformed:
    """Stands in for a request whose bytes did not parse."""


MALFORMED = _Malformed()


def tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """The deserializer, answering MALFORMED instead of raising on bad bytes."""

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, ValueError, UnicodeDecodeError):
            return MALFORMED

    return deserialize


class RpcGuard:
    def __init__(
        self,
        authenticator: Authenticator,
        max_rpc_seconds: float,
        policy: AccessPolicy = DEFAULT_POLICY,
        audit: AuditLog | None = None,
        *,
        max_in_flight: int = 0,
        observer: RpcObserver | None = None,
        tracing: RpcTracing | None = None,
        overload: OverloadSignal | None = None,
    ) -> None:
        """`max_in_flight` 0: no admission bound of our own (grpc's alone). `overload`
        None: no shedding on queueing delay."""
        self._authenticator = authenticator
        self._max_rpc_seconds = max_rpc_seconds
        self._policy = policy
        self._audit = audit or AuditLog()
        self._max_in_flight = max_in_flight or 2**62
        self._observer = observer
        self._tracing = tracing
        self._overload: OverloadSignal = overload or _NeverOverloaded()
        # Calls of every guarded method in flight in this worker (all on its event loop:
        # no lock), the calls refused because too many were (`shed`) or because the
        # worker's queueing delay was above target (`shed_queue_delay`), and the calls
        # whose deadline had passed when their handler started (`expired`).
        self.in_flight = 0
        self.shed = 0
        self.shed_queue_delay = 0
        self.expired = 0

    def wrap(self, method: str, inner: Behaviour) -> Behaviour:
        """The guarded behaviour of unary method `method` ("/package.Service/Method")."""
        rule = self._policy.rule_for(method)
        admit = self._admission(method, rule)
        cap = self._max_rpc_seconds
        limit = self._max_in_flight
        overload = self._overload

        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            remaining = context.time_remaining()  # None: no deadline; never negative
            if remaining is not None and remaining <= 0:
                self.expired += 1
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, EXPIRED_DETAILS)
            if overload.overloaded:
                self.shed_queue_delay += 1
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, SHED_DETAILS)
            if self.in_flight >= limit:
                self.shed += 1
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, SHED_DETAILS)
            self.in_flight += 1
            try:
                principal = admit(request, context)
                if isinstance(principal, Refusal):
                    await context.abort(principal.code, principal.details)
                budget = cap if remaining is None else min(cap, remaining)
                current_principal_var.set(principal)  # the call's own task: no reset needed
                try:
                    with within_rpc_deadline(budget):
                        return await inner(request, context)
                except Exception as error:  # mapped, or reported as INTERNAL
                    await _abort_for(error, context, method)
            finally:
                self.in_flight -= 1

        behaviour: Behaviour = self._audited(method, guarded) if rule.audited else guarded
        if self._observer is not None:
            behaviour = self._measured(self._observer.for_method(method), behaviour)
        if self._tracing is not None:
            behaviour = self._traced(self._tracing, method, behaviour)
        return behaviour

    def wrap_stream(self, method: str, inner: StreamBehaviour) -> StreamBehaviour:
        """The guarded behaviour of server-streaming method `method`: as `wrap`, but a
        stream is long-lived, so it neither counts against nor is refused by the unary
        in-flight bound (the use case bounds open streams), and gets no deadline budget
        of its own (each store call in it has the store's); errors end it with their
        status. With an observer, each stream is counted when it starts and when it ends
        (by status) and its duration observed; audit and tracing do not wrap streams."""
        admit = self._admission(method, self._policy.rule_for(method))

        async def guarded(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncGenerator[Any, None]:
            principal = admit(request, context)
            if isinstance(principal, Refusal):
                await context.abort(principal.code, principal.details)
            current_principal_var.set(principal)
            responses = inner(request, context)
            try:
                async with contextlib.aclosing(responses):
                    async for response in responses:
                        yield response
            except Exception as error:  # mapped, or reported as INTERNAL
                await _abort_for(error, context, method)

        if self._observer is not None:
            return self._measured_stream(self._observer.for_stream(method), guarded)
        return guarded

    @staticmethod
    def _measured_stream(observer: MethodObserver, inner: StreamBehaviour) -> StreamBehaviour:
        started, observe, handled = observer.started, observer.observe, observer.handled
        clock = time.perf_counter

        async def measured(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncGenerator[Any, None]:
            started()
            began = clock()
            failed, cancelled = True, False
            try:
                async with contextlib.aclosing(inner(request, context)) as responses:
                    async for response in responses:
                        yield response
                failed = False
            except (asyncio.CancelledError, GeneratorExit):
                # The caller went away (or the server stops): grpc cancels the stream's
                # task before context.cancelled() says so.
                cancelled = True
                raise
            finally:
                observe(clock() - began)
                code = context.code() if cancelled else None
                handled(code or (CANCELLED if cancelled else _code(context, failed=failed)))

        return measured

    def _admission(self, method: str, rule: MethodRule) -> Admission:
        """Steps 1 and 2 for calls of `method`, unary or streaming: the caller's principal
        (None under an open rule without a credential), or the refusal to end it with."""
        check = access_check(method, rule)
        authenticate = self._authenticator.authenticate

        def admit(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> Principal | Refusal | None:
            principal = authenticate(context.invocation_metadata())
            if not rule.open:
                decision = check(principal)
                if isinstance(decision, Refusal):
                    return decision
            if request is MALFORMED:
                return MALFORMED_REQUEST
            return principal

        return admit

    @staticmethod
    def _traced(tracing: RpcTracing, method: str, inner: Behaviour) -> Behaviour:
        from opentelemetry.trace import SpanKind

        from service.grpc_api.tracing import end_rpc_span

        start_span = tracing.tracer.start_as_current_span
        parent_of = tracing.parent_of
        name = method.lstrip("/")
        attributes = tracing.attributes_of(method)
        server = SpanKind.SERVER

        async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with start_span(
                name,
                context=parent_of(context.invocation_metadata()),
                kind=server,
                attributes=attributes,
                record_exception=False,  # aborts are statuses, not errors
                set_status_on_exception=False,
            ) as span:
                # The call's log lines carry its trace id (the call's own task).
                trace_id_var.set(format(span.get_span_context().trace_id, "032x"))
                try:
                    response = await inner(request, context)
                except BaseException:
                    end_rpc_span(span, _code(context, failed=True))
                    raise
                end_rpc_span(span, _code(context, failed=False))
                return response

        return traced

    @staticmethod
    def _measured(observer: MethodObserver, inner: Behaviour) -> Behaviour:
        started, observe, handled = observer.started, observer.observe, observer.handled
        clock = time.perf_counter

        async def measured(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started()
            began = clock()
            try:
                response = await inner(request, context)
            except BaseException:
                observe(clock() - began)
                handled(_code(context, failed=True))
                raise
            observe(clock() - began)
            handled(_code(context, failed=False))
            return response

        return measured

    def _audited(self, method: str, inner: Behaviour) -> Behaviour:
        record = self._audit.record
        authenticate = self._authenticator.authenticate

        async def audited(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.monotonic()
            principal = authenticate(context.invocation_metadata())
            audit_request = None if request is MALFORMED else request
            request_id_var.set(request_id_of(audit_request))  # for the call's log lines
            try:
                response = await inner(request, context)
            except BaseException:
                outcome = _code(context, failed=True)
                _record(record, method, principal, audit_request, outcome, started)
                raise
            outcome = _code(context, failed=False)
            _record(record, method, principal, audit_request, outcome, started)
            return response

        return audited


async def _abort_for(
    error: Exception, context: grpc.aio.ServicerContext[Any, Any], method: str
) -> NoReturn:
    """Step 4: ends the call with the status of `error` (an abort stays as it is); an
    unexpected error is logged and answered INTERNAL without details. Call it from the
    `except` block that caught `error` (the log line carries its traceback)."""
    if isinstance(error, grpc.aio.AbortError):
        raise error
    status = status_for(error)
    if status is None:
        log.exception("unexpected error in %s", method)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")
    await context.abort(status.code, status.details, status.trailing_metadata)


def _code(context: grpc.aio.ServicerContext[Any, Any], *, failed: bool) -> grpc.StatusCode:
    """The status the call ends with: the one set or aborted with; else CANCELLED when the
    caller went away, UNKNOWN when an exception ended it, OK when it returned."""
    code: grpc.StatusCode | None = context.code()
    if code is not None:
        return code
    if context.cancelled():
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK


def _record(
    record: Callable[..., None],
    method: str,
    principal: Principal | None,
    request: Any,
    outcome: grpc.StatusCode,
    started: float,
) -> None:
    try:
        record(
            method=method,
            principal=principal.name if principal else None,
            role=principal.role.value if principal else None,
            request=request,
            outcome=outcome,
            started=started,
        )
    except Exception:  # an audit failure must not change the call's answer
        log.exception("cannot write the audit record of %s", method)
