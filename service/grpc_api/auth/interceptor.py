"""The server side: AuthInterceptor authenticates every call by its bearer token, authorizes
it under the access policy, makes the principal known to the handler (current_principal),
and writes an audit record of each call the policy marks audited.

A presented token is hashed and compared with every principal's digest in constant time.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import grpc

from service.grpc_api.audit import AuditLog
from service.grpc_api.auth.credentials import AUTHORIZATION, BEARER, Credential, Principal
from service.grpc_api.auth.policy import (
    DEFAULT_POLICY,
    AccessPolicy,
    MethodRule,
    Refusal,
    access_check,
)
from service.grpc_api.handler_cache import HandlerCache

# The package's logger: the name it had before auth.py became a package.
log = logging.getLogger(__package__)


# --- authentication -------------------------------------------------------------------


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The token of the one `authorization: Bearer <token>` entry, or None when it is
    missing, repeated or malformed."""
    found: str | None = None
    seen = False
    for key, value in metadata or ():
        if key != AUTHORIZATION:
            continue
        if seen or not isinstance(value, str):
            return None
        seen = True
        match = BEARER.fullmatch(value)
        found = match.group(1) if match else None
    return found


class Authenticator:
    """Maps a presented bearer token to its principal."""

    def __init__(self, credentials: Iterable[Credential]) -> None:
        self._entries = tuple((c.digest, c.principal) for c in credentials)

    @property
    def principals(self) -> tuple[Principal, ...]:
        return tuple(principal for _, principal in self._entries)

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal | None:
        token = bearer_token(metadata)
        if token is None:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        # Every digest is compared, in constant time, whichever matches: the time taken
        # tells nothing about which principal (if any) a guess came close to.
        found: Principal | None = None
        for candidate, principal in self._entries:
            if hmac.compare_digest(candidate, digest):
                found = principal
        return found


# --- the interceptor ------------------------------------------------------------------

_current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "entitlements_principal", default=None
)


def current_principal() -> Principal | None:
    """The authenticated principal of the call the current handler serves."""
    return _current_principal.get()


Behaviour = Callable[[Any, grpc.ServicerContext], Any]


class AuthInterceptor(grpc.ServerInterceptor):
    """Authenticates and authorizes every call, and audits the calls its policy marks.

    The check runs inside the method handler (in the handler thread, with the context), so
    a refusal is an ordinary context.abort. Wrapped handlers are cached per method."""

    def __init__(
        self,
        authenticator: Authenticator,
        policy: AccessPolicy = DEFAULT_POLICY,
        audit: AuditLog | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._policy = policy
        self._audit = audit or AuditLog()
        self._handlers = HandlerCache(self._wrap)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # UNIMPLEMENTED: no such method
        return self._handlers.wrapped(handler_call_details.method, handler)

    # The guard returns the principal or aborts the call.
    @staticmethod
    def _guard(
        method: str, rule: MethodRule
    ) -> Callable[[grpc.ServicerContext, Principal | None], Principal]:
        check = access_check(method, rule)

        def guard(context: grpc.ServicerContext, principal: Principal | None) -> Principal:
            decision = check(principal)
            if isinstance(decision, Refusal):
                context.abort(decision.code, decision.details)
            return decision

        return guard

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        rule = self._policy.rule_for(method)
        if rule.open:
            return handler
        if handler.unary_unary is not None:
            behaviour = self._unary(handler.unary_unary, method, rule, streaming_request=False)
            factory = grpc.unary_unary_rpc_method_handler
        elif handler.stream_unary is not None:
            behaviour = self._unary(handler.stream_unary, method, rule, streaming_request=True)
            factory = grpc.stream_unary_rpc_method_handler
        elif handler.unary_stream is not None:
            behaviour = self._streaming(handler.unary_stream, method, rule, False)
            factory = grpc.unary_stream_rpc_method_handler
        elif handler.stream_stream is not None:
            behaviour = self._streaming(handler.stream_stream, method, rule, True)
            factory = grpc.stream_stream_rpc_method_handler
        else:  # pragma: no cover - grpc handlers always carry one behaviour
            raise ValueError(f"handler of {method} has no behaviour")
        return factory(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _unary(
        self, inner: Behaviour, method: str, rule: MethodRule, *, streaming_request: bool
    ) -> Behaviour:
        authenticate = self._authenticator.authenticate
        guard = self._guard(method, rule)

        def checked(request: Any, context: grpc.ServicerContext) -> Any:
            principal = guard(context, authenticate(context.invocation_metadata()))
            reset = _current_principal.set(principal)
            try:
                return inner(request, context)
            finally:
                _current_principal.reset(reset)

        if not rule.audited:
            return checked
        record = self._audit.record

        def audited(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.monotonic()
            principal = authenticate(context.invocation_metadata())
            audit_request = None if streaming_request else request
            try:
                guard(context, principal)
                reset = _current_principal.set(principal)
                try:
                    response = inner(request, context)
                finally:
                    _current_principal.reset(reset)
            except BaseException:
                outcome = _code(context, grpc.StatusCode.UNKNOWN)
                _record(record, method, principal, audit_request, outcome, started)
                raise
            outcome = _code(context, grpc.StatusCode.OK)
            if outcome is grpc.StatusCode.OK and not context.is_active():
                outcome = grpc.StatusCode.CANCELLED
            _record(record, method, principal, audit_request, outcome, started)
            return response

        return audited

    def _streaming(
        self, inner: Behaviour, method: str, rule: MethodRule, streaming_request: bool
    ) -> Behaviour:
        authenticate = self._authenticator.authenticate
        guard = self._guard(method, rule)
        record = self._audit.record if rule.audited else None

        def checked(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.monotonic()
            principal = authenticate(context.invocation_metadata())
            audit_request = None if streaming_request else request
            outcome = grpc.StatusCode.OK
            try:
                guard(context, principal)
                reset = _current_principal.set(principal)
                try:
                    yield from inner(request, context)
                finally:
                    _current_principal.reset(reset)
                outcome = _code(context, grpc.StatusCode.OK)
            except BaseException:
                outcome = _code(context, grpc.StatusCode.UNKNOWN)
                raise
            finally:
                if record is not None:
                    _record(record, method, principal, audit_request, outcome, started)

        return checked


def _code(context: grpc.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    """The status the call ends with: the one set or aborted with, else `default` (OK for a
    returned response, UNKNOWN for an exception gRPC will report as such)."""
    code: grpc.StatusCode | None = context.code()  # type: ignore[attr-defined]  # not in stubs
    return code or default


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
