"""Authentication and authorization of calls, transport security, and the generated local
development credentials.

Callers send a bearer token in the call metadata (`authorization: Bearer <token>`). The
credentials file lists principals with the SHA-256 digest of their token, never the token:

    principals:
      - name: checkout-backend      # who, as written to the audit log
        role: admin                 # admin: every RPC; service: the read RPCs
        token_sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8

(YAML or JSON with the same shape.) A presented token is hashed and compared with every
principal's digest in constant time. Authorization is deny by default: the read services
need the role `service` or `admin`, the write service `admin`; only health checks and server
reflection are open; any other method is refused. A missing, malformed or unknown credential
answers UNAUTHENTICATED; a known one lacking the role PERMISSION_DENIED.
"""

from __future__ import annotations

import contextvars
import enum
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from entitlements.v1 import (
    entitlement_service_pb2,
    offer_service_pb2,
    subscription_event_service_pb2,
)
from service.config import Settings
from service.grpc_api.audit import AuditLog

log = logging.getLogger(__name__)

AUTHORIZATION = "authorization"
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class Role(enum.StrEnum):
    ADMIN = "admin"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role


class CredentialsError(ValueError):
    """The credentials file (or the development credentials) cannot be used."""


def token_digest(token: str) -> str:
    """The SHA-256 hex digest of a token, as the credentials file stores it."""
    return hashlib.sha256(token.encode()).hexdigest()


# --- the credentials file -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credential:
    principal: Principal
    digest: bytes  # SHA-256 of the token (32 bytes)


_ENTRY_KEYS = frozenset({"name", "role", "token_sha256"})


def parse_credentials(document: Any, source: str = "credentials") -> tuple[Credential, ...]:
    """Validates a parsed credentials document; every problem names the bad entry."""
    if not isinstance(document, dict) or not isinstance(document.get("principals"), list):
        raise CredentialsError(f"{source}: expected a mapping with a list 'principals'")
    if set(document) - {"principals"}:
        unknown = ", ".join(sorted(map(str, set(document) - {"principals"})))
        raise CredentialsError(f"{source}: unknown top-level keys: {unknown}")
    entries: list[Credential] = []
    names: set[str] = set()
    digests: set[bytes] = set()
    for index, entry in enumerate(document["principals"]):
        where = f"{source}: principals[{index}]"
        if not isinstance(entry, dict):
            raise CredentialsError(f"{where}: expected a mapping with name, role, token_sha256")
        if "token" in entry:
            raise CredentialsError(
                f"{where}: plaintext 'token' found; store only token_sha256, the SHA-256 hex "
                "digest of the token"
            )
        if set(entry) != _ENTRY_KEYS:
            missing = ", ".join(sorted(_ENTRY_KEYS - set(entry)))
            extra = ", ".join(sorted(map(str, set(entry) - _ENTRY_KEYS)))
            raise CredentialsError(
                f"{where}: expected keys name, role, token_sha256"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {extra}" if extra else "")
            )
        name, role, digest = entry["name"], entry["role"], entry["token_sha256"]
        if not isinstance(name, str) or not name.strip():
            raise CredentialsError(f"{where}.name: expected a non-empty string")
        where = f"{source}: principals[{index}] ({name})"
        if name in names:
            raise CredentialsError(f"{where}.name: duplicate principal name")
        if role not in {r.value for r in Role}:
            roles = ", ".join(r.value for r in Role)
            raise CredentialsError(f"{where}.role: {role!r} is not one of {roles}")
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise CredentialsError(f"{where}.token_sha256: expected 64 hex digits (SHA-256)")
        raw = bytes.fromhex(digest)
        if raw in digests:
            raise CredentialsError(f"{where}.token_sha256: the same token is listed twice")
        names.add(name)
        digests.add(raw)
        entries.append(Credential(Principal(name, Role(role)), raw))
    if not entries:
        raise CredentialsError(f"{source}: 'principals' is empty")
    return tuple(entries)


def load_credentials(path: Path) -> tuple[Credential, ...]:
    """Reads a credentials file (YAML, or JSON, which YAML parsers read too)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CredentialsError(f"cannot read credentials file {path}: {exc.strerror}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CredentialsError(f"{path}: not valid YAML or JSON: {exc}") from exc
    return parse_credentials(document, str(path))


def credentials_yaml(principals: Iterable[tuple[str, Role, str]], header: str = "") -> str:
    """A credentials file for (name, role, plaintext token) triples; it stores digests."""
    document = {
        "principals": [
            {"name": name, "role": role.value, "token_sha256": token_digest(token)}
            for name, role, token in principals
        ]
    }
    comment = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines())
    return comment + yaml.safe_dump(document, sort_keys=False)


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
        match = _BEARER.fullmatch(value)
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


# --- authorization --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MethodRule:
    open: bool = False  # no credential needed
    roles: frozenset[Role] = frozenset()  # empty and not open: nobody may call
    audited: bool = False


DENY = MethodRule()
OPEN = MethodRule(open=True)
READ = MethodRule(roles=frozenset({Role.SERVICE, Role.ADMIN}))
ADMIN = MethodRule(roles=frozenset({Role.ADMIN}), audited=True)

ENTITLEMENT_SERVICE = entitlement_service_pb2.DESCRIPTOR.services_by_name[
    "EntitlementService"
].full_name
OFFER_SERVICE = offer_service_pb2.DESCRIPTOR.services_by_name["OfferService"].full_name
EVENT_SERVICE = subscription_event_service_pb2.DESCRIPTOR.services_by_name[
    "SubscriptionEventService"
].full_name
# Load balancers probe health, and grpcurl needs reflection, without credentials.
OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


@dataclass(frozen=True)
class AccessPolicy:
    """Rules per fully qualified service name; a service not listed is denied."""

    services: Mapping[str, MethodRule]

    def rule_for(self, method: str) -> MethodRule:
        """`method` as gRPC names it: "/package.Service/Method"."""
        service, slash, name = method.lstrip("/").rpartition("/")
        if not slash or not service or not name:
            return DENY
        return self.services.get(service, DENY)


DEFAULT_POLICY = AccessPolicy(
    {
        ENTITLEMENT_SERVICE: READ,
        OFFER_SERVICE: READ,
        EVENT_SERVICE: ADMIN,
        **dict.fromkeys(OPEN_SERVICES, OPEN),
    }
)

_current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "entitlements_principal", default=None
)


def current_principal() -> Principal | None:
    """The authenticated principal of the call the current handler serves."""
    return _current_principal.get()


_UNAUTHENTICATED = "missing or invalid credential: send 'authorization: Bearer <token>' metadata"

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
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], Any]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # UNIMPLEMENTED: no such method
        method = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None and cached[0] is handler:
            wrapped: grpc.RpcMethodHandler[Any, Any] = cached[1]
            return wrapped
        rule = self._policy.rule_for(method)
        wrapped = handler if rule.open else self._wrap(handler, method, rule)
        self._handlers[method] = (handler, wrapped)
        return wrapped

    # The guard returns the principal or aborts the call.
    @staticmethod
    def _guard(
        method: str, rule: MethodRule
    ) -> Callable[[grpc.ServicerContext, Principal | None], Principal]:
        denied = f"this credential's role may not call {method.lstrip('/')}"

        def guard(context: grpc.ServicerContext, principal: Principal | None) -> Principal:
            if principal is None:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, _UNAUTHENTICATED)
            if principal.role not in rule.roles:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, denied)
            return principal

        return guard

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str, rule: MethodRule
    ) -> grpc.RpcMethodHandler[Any, Any]:
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


# --- the client side ------------------------------------------------------------------


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class BearerTokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call of a channel."""

    def __init__(self, token: str) -> None:
        self.metadata: tuple[tuple[str, str], ...] = ((AUTHORIZATION, f"Bearer {token}"),)

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            (*(details.metadata or ()), *self.metadata),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def with_bearer_token(channel: grpc.Channel, token: str) -> grpc.Channel:
    """A channel sending `token` on every call (closing it closes `channel`)."""
    return grpc.intercept_channel(channel, BearerTokenInterceptor(token))


def bearer_metadata(token: str) -> tuple[tuple[str, str]]:
    """Per-call metadata carrying `token`."""
    return ((AUTHORIZATION, f"Bearer {token}"),)


# --- transport security ---------------------------------------------------------------


def _read_pem(setting: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CredentialsError(f"TLS: cannot read {setting} {path}: {exc.strerror}") from exc


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials for the server port, or None for plaintext. With a client CA, every
    client must present a certificate it signed (mutual TLS): gRPC enforces client
    certificates only when it has root certificates to check them against."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None  # Settings rejects a key without a certificate and the reverse
    chain = _read_pem("tls_cert_file", settings.tls_cert_file)
    key = _read_pem("tls_key_file", settings.tls_key_file)
    client_ca = (
        _read_pem("tls_client_ca_file", settings.tls_client_ca_file)
        if settings.tls_client_ca_file is not None
        else None
    )
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def channel_credentials(
    ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials:
    """TLS credentials for a client: the CA to trust (None: the system's roots) and an
    optional client certificate and key for mutual TLS."""
    if (cert_file is None) != (key_file is None):
        raise CredentialsError("TLS: a client certificate needs its key, and the reverse")
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem("CA file", ca_file) if ca_file else None,
        private_key=_read_pem("client key", key_file) if key_file else None,
        certificate_chain=_read_pem("client certificate", cert_file) if cert_file else None,
    )


# --- generated development credentials -----------------------------------------------

DEV_CREDENTIALS_FILE = "dev-credentials.yaml"
DEV_TOKENS_FILE = "dev-tokens.json"
DEV_PRINCIPALS = {Role.ADMIN: "dev-admin", Role.SERVICE: "dev-service"}
_DEV_HEADER = """\
Development credentials generated by `entitlements serve` because no credentials_file
(ENTITLEMENTS_CREDENTIALS_FILE) is configured. Derived from dev-tokens.json beside it,
which holds the plaintext tokens: delete both files to get new tokens. Regenerated when it
does not match dev-tokens.json; write your own file for anything but local development."""


@dataclass(frozen=True, slots=True)
class DevCredentials:
    credentials_file: Path
    tokens_file: Path
    tokens: Mapping[Role, str]
    created: bool  # the tokens are new (print them once)


def read_dev_tokens(data_dir: Path) -> dict[Role, str] | None:
    """The plaintext development tokens, or None when none were generated."""
    path = data_dir / DEV_TOKENS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"{path}: unreadable ({exc}); delete it to regenerate") from exc
    tokens = {role: raw.get(role.value) for role in Role} if isinstance(raw, dict) else {}
    if not all(isinstance(t, str) and _BEARER.fullmatch(f"Bearer {t}") for t in tokens.values()):
        raise CredentialsError(
            f"{path}: expected admin and service tokens; delete it to regenerate"
        )
    return {role: str(token) for role, token in tokens.items()}


def ensure_dev_credentials(data_dir: Path) -> DevCredentials:
    """Generates an admin and a service token once (data_dir/dev-tokens.json, mode 0600)
    and keeps data_dir/dev-credentials.yaml (digests only) in step with them."""
    data_dir.mkdir(parents=True, exist_ok=True)
    tokens_file = data_dir / DEV_TOKENS_FILE
    tokens = read_dev_tokens(data_dir)
    created = False
    if tokens is None:
        fresh = {role: secrets.token_urlsafe(32) for role in Role}
        created = _create_exclusively(
            tokens_file, json.dumps({r.value: t for r, t in fresh.items()}, indent=2) + "\n"
        )
        tokens = fresh if created else read_dev_tokens(data_dir)  # another process won
        assert tokens is not None
    credentials_file = data_dir / DEV_CREDENTIALS_FILE
    content = credentials_yaml(
        ((DEV_PRINCIPALS[role], role, token) for role, token in tokens.items()), _DEV_HEADER
    )
    try:
        current = credentials_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    if current != content:
        staging = credentials_file.with_name(f".{credentials_file.name}.{os.getpid()}")
        staging.write_text(content, encoding="utf-8")
        os.replace(staging, credentials_file)
    return DevCredentials(credentials_file, tokens_file, tokens, created)


def _create_exclusively(path: Path, content: str) -> bool:
    """Writes a new owner-only file atomically; False when `path` already exists."""
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)  # whatever the umask
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(staging, path)
        except FileExistsError:
            return False
        return True
    finally:
        staging.unlink(missing_ok=True)
