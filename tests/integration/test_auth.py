"""Authentication, authorization, the audit log and TLS against real servers on free ports.

Every RPC of the three entitlement services is enumerated from the service descriptors, so a
new RPC is covered (and must be reachable only with the right credential) without an edit
here."""

from __future__ import annotations

import datetime as dt
import json
import logging
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from entitlements.v1 import (
    entitlement_service_pb2,
    offer_service_pb2,
    subscription_event_service_pb2,
)
from entitlements.v1 import entitlement_service_pb2 as es
from service.config import Settings
from service.domain.identity import user_digest
from service.grpc_api.audit import AUDIT_LOGGER
from service.grpc_api.auth import (
    DEFAULT_POLICY,
    EVENT_SERVICE,
    READ,
    AccessPolicy,
    Authenticator,
    CredentialsError,
    Role,
    bearer_metadata,
    bearer_token,
    current_principal,
    ensure_dev_credentials,
    load_credentials,
    parse_credentials,
    token_digest,
    with_bearer_token,
)
from service.grpc_api.event_loop import LoopThread
from service.grpc_api.guard import RpcGuard
from service.grpc_api.logs import JsonFormatter
from service.grpc_api.server import start_server
from tests.support.harness import (
    ADMIN_PRINCIPAL,
    ADMIN_TOKEN,
    SERVICE_PRINCIPAL,
    SERVICE_TOKEN,
    Harness,
    write_test_credentials,
)
from tests.support.tls import Pem, make_cert, tls_server

pytestmark = pytest.mark.timeout(60)

SERVICES = (
    entitlement_service_pb2.DESCRIPTOR.services_by_name["EntitlementService"],
    offer_service_pb2.DESCRIPTOR.services_by_name["OfferService"],
    subscription_event_service_pb2.DESCRIPTOR.services_by_name["SubscriptionEventService"],
)
RPCS = [(service, method) for service in SERVICES for method in service.methods]
READ_RPCS = [rpc for rpc in RPCS if rpc[0].full_name != EVENT_SERVICE]
WRITE_RPCS = [rpc for rpc in RPCS if rpc[0].full_name == EVENT_SERVICE]
RPC_IDS = [f"{service.name}.{method.name}" for service, method in RPCS]
READ_IDS = [f"{s.name}.{m.name}" for s, m in READ_RPCS]
WRITE_IDS = [f"{s.name}.{m.name}" for s, m in WRITE_RPCS]
AUTH_CODES = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}

Metadata = tuple[tuple[str, str], ...]


def test_the_rpc_list_is_complete() -> None:
    assert len(READ_RPCS) >= 4
    assert len(WRITE_RPCS) >= 4
    for _, method in RPCS:  # call() below speaks unary-unary and unary-stream only
        assert not method.client_streaming, method.full_name
    assert any(method.server_streaming for _, method in RPCS)


def call(
    channel: grpc.Channel,
    service: descriptor.ServiceDescriptor,
    method: descriptor.MethodDescriptor,
    metadata: Metadata = (),
    request: Any = None,
) -> grpc.StatusCode:
    """Calls the RPC (with an empty request unless given) and returns its status code."""
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    path = f"/{service.full_name}/{method.name}"
    serialize: Any = request_class.SerializeToString
    deserialize: Any = response_class.FromString
    message: Any = request if request is not None else request_class()
    try:
        if method.server_streaming:  # the status of the stream's start: its first message
            stream: Any = channel.unary_stream(path, serialize, deserialize)(
                message, metadata=metadata, timeout=5
            )
            next(stream)
            stream.cancel()
        else:
            channel.unary_unary(path, serialize, deserialize)(message, metadata=metadata, timeout=5)
    except grpc.RpcError as error:
        failure = error
    else:
        return grpc.StatusCode.OK
    assert isinstance(failure, grpc.Call)
    return failure.code()


@pytest.fixture(scope="module")
def bare_channel(harness: Harness) -> Iterator[grpc.Channel]:
    """A channel to the harness server that sends no credential of its own."""
    with grpc.insecure_channel(harness.target) as channel:
        yield channel


# --- every RPC, every credential ------------------------------------------------------


@pytest.mark.parametrize(("service", "method"), RPCS, ids=RPC_IDS)
def test_no_credential_is_unauthenticated(
    bare_channel: grpc.Channel,
    service: descriptor.ServiceDescriptor,
    method: descriptor.MethodDescriptor,
) -> None:
    assert call(bare_channel, service, method) is grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(("service", "method"), RPCS, ids=RPC_IDS)
def test_wrong_token_is_unauthenticated(
    bare_channel: grpc.Channel,
    service: descriptor.ServiceDescriptor,
    method: descriptor.MethodDescriptor,
) -> None:
    for token in ("wrong-token", ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1], token_digest(ADMIN_TOKEN)):
        code = call(bare_channel, service, method, bearer_metadata(token))
        assert code is grpc.StatusCode.UNAUTHENTICATED, token


MALFORMED: list[Metadata] = [
    (("authorization", f"Basic {ADMIN_TOKEN}"),),
    (("authorization", "Basic x"),),
    (("authorization", "Bearer"),),
    (("authorization", "Bearer "),),
    (("authorization", ""),),
    (("authorization", ADMIN_TOKEN),),  # no scheme
    (("authorization", f"Bearer {ADMIN_TOKEN} extra"),),
    (("authorization", f"Bearer{ADMIN_TOKEN}"),),
    (("authorization", f"Bearer {ADMIN_TOKEN}"), ("authorization", f"Bearer {ADMIN_TOKEN}")),
    (("x-api-key", ADMIN_TOKEN),),
]


@pytest.mark.parametrize(("service", "method"), RPCS, ids=RPC_IDS)
def test_malformed_header_is_unauthenticated(
    bare_channel: grpc.Channel,
    service: descriptor.ServiceDescriptor,
    method: descriptor.MethodDescriptor,
) -> None:
    for metadata in MALFORMED:
        assert call(bare_channel, service, method, metadata) is grpc.StatusCode.UNAUTHENTICATED, (
            metadata
        )


@pytest.mark.parametrize(("service", "method"), READ_RPCS, ids=READ_IDS)
def test_read_rpcs_accept_service_and_admin_tokens(
    bare_channel: grpc.Channel,
    service: descriptor.ServiceDescriptor,
    method: descriptor.MethodDescriptor,
) -> None:
    for token in (SERVICE_TOKEN, ADMIN_TOKEN):
        assert call(bare_channel, service, method, bearer_metadata(token)) not in AUTH_CODES
    # The scheme is case-insensitive (RFC 7235).
    lower = (("authorization", f"bearer {SERVICE_TOKEN}"),)
    assert call(bare_channel, service, method, lower) not in AUTH_CODES


@pytest.mark.parametrize(("service", "method"), WRITE_RPCS, ids=WRITE_IDS)
def test_write_rpcs_refuse_the_service_token(
    bare_channel: grpc.Channel,
    service: descriptor.ServiceDescriptor,
    method: descriptor.MethodDescriptor,
) -> None:
    code = call(bare_channel, service, method, bearer_metadata(SERVICE_TOKEN))
    assert code is grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(("service", "method"), WRITE_RPCS, ids=WRITE_IDS)
def test_write_rpcs_let_the_admin_token_through(
    bare_channel: grpc.Channel,
    service: descriptor.ServiceDescriptor,
    method: descriptor.MethodDescriptor,
) -> None:
    # An empty request: whatever the handler answers, authentication let it through.
    assert call(bare_channel, service, method, bearer_metadata(ADMIN_TOKEN)) not in AUTH_CODES


def test_harness_channels_carry_their_tokens(harness: Harness) -> None:
    (service, method) = WRITE_RPCS[0]
    assert call(harness.channel, service, method) is grpc.StatusCode.PERMISSION_DENIED
    assert call(harness.admin_channel, service, method) not in AUTH_CODES
    with grpc.insecure_channel(harness.target) as channel:
        assert call(channel, service, method, harness.admin_metadata) not in AUTH_CODES
        assert call(channel, service, method, harness.service_metadata) not in {
            grpc.StatusCode.OK,
            grpc.StatusCode.UNAUTHENTICATED,
        }


# --- open services --------------------------------------------------------------------


def test_health_and_reflection_need_no_credential(bare_channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(bare_channel)
    for service in ("", "entitlements.v1.EntitlementService"):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)  # type: ignore[attr-defined]  # stubs lack Check
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    # A wrong credential does not matter either.
    health.Check(health_pb2.HealthCheckRequest(), metadata=bearer_metadata("nope"), timeout=5)  # type: ignore[attr-defined]
    reflection = reflection_pb2_grpc.ServerReflectionStub(bare_channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (answer,) = list(reflection.ServerReflectionInfo(iter([request]), timeout=5))  # type: ignore[operator]
    names = {s.name for s in answer.list_services_response.service}
    assert {service.full_name for service in SERVICES} <= names


# --- the audit log --------------------------------------------------------------------


@pytest.fixture
def audit_records(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(level=logging.INFO)
    logger = logging.getLogger(AUDIT_LOGGER)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


USER_ID = "audit-user-8c1f"


def write_request(method: descriptor.MethodDescriptor, request_id: str) -> Any:
    fields = method.input_type.fields_by_name
    # The household RPCs name the member (and the manager) instead of one user.
    user_field = next(f for f in ("user_id", "member_user_id", "manager_user_id") if f in fields)
    request = message_factory.GetMessageClass(method.input_type)(**{user_field: USER_ID})
    field = "event_id" if "event_id" in method.input_type.fields_by_name else "request_id"
    setattr(request, field, request_id)
    return request


def test_admin_calls_are_audited_without_tokens_or_user_ids(
    bare_channel: grpc.Channel, audit_records: list[logging.LogRecord]
) -> None:
    expected = []
    for index, (service, method) in enumerate(WRITE_RPCS):
        for token, principal in (
            (ADMIN_TOKEN, ADMIN_PRINCIPAL),
            (SERVICE_TOKEN, SERVICE_PRINCIPAL),
            (None, None),
        ):
            request_id = f"audit-{index}-{principal}"
            metadata = bearer_metadata(token) if token else ()
            code = call(bare_channel, service, method, metadata, write_request(method, request_id))
            expected.append((f"{service.full_name}/{method.name}", principal, request_id, code))
    # Reads are not audited.
    read_service, read_method = READ_RPCS[0]
    call(bare_channel, read_service, read_method, bearer_metadata(ADMIN_TOKEN))

    assert [r.name for r in audit_records] == [AUDIT_LOGGER] * len(expected)
    # As `serve` writes them: the format of every log line (JsonFormatter).
    lines = [JsonFormatter().format(record) for record in audit_records]
    entries = [json.loads(line) for line in lines]
    assert [(e["method"], e["principal"], e["request_id"], e["outcome"]) for e in entries] == [
        (method, principal, request_id, code.name)
        for method, principal, request_id, code in expected
    ]
    outcomes = {e["outcome"] for e in entries}
    assert {"UNAUTHENTICATED", "PERMISSION_DENIED"} <= outcomes
    for entry, line in zip(entries, lines, strict=True):
        assert entry["user"] == user_digest(USER_ID)
        assert len(entry["user"]) == 16
        assert entry["role"] in {"admin", "service", None}
        dt.datetime.fromisoformat(entry["timestamp"])
        assert (entry["level"], entry["logger"]) == ("INFO", AUDIT_LOGGER)
        who = entry["principal"] or "an unauthenticated caller"
        assert entry["message"] == f"{entry['method']} by {who}: {entry['outcome']}"
        assert USER_ID not in line
        assert ADMIN_TOKEN not in line
        assert SERVICE_TOKEN not in line


# --- deny by default, and the principal seen by handlers ------------------------------


@dataclass
class Bare:
    port: int


@pytest.fixture(scope="module")
def custom_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bare]:
    """A grpc.aio server whose methods are wrapped by the RPC guard, with two raw-bytes
    services: `test.Read` is a read service in its policy, `test.Unlisted` is not in it."""
    credentials = load_credentials(
        write_test_credentials(tmp_path_factory.mktemp("auth") / "credentials.yaml")
    )
    policy = AccessPolicy({**DEFAULT_POLICY.services, "test.Read": READ})
    guard = RpcGuard(Authenticator(credentials), max_rpc_seconds=5, policy=policy)

    async def who(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        principal = current_principal()
        return f"{principal.name}/{principal.role}".encode() if principal else b"nobody"

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        for name in ("test.Read", "test.Unlisted"):
            handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
                guard.wrap(f"/{name}/Who", who)
            )
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(name, {"Who": handler}),)
            )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    loop = LoopThread("auth-test-server")
    server, port = loop.run(start())
    try:
        yield Bare(port)
    finally:
        loop.run(server.stop(0))
        loop.stop()


def raw_call(port: int, method: str, metadata: Metadata) -> tuple[grpc.StatusCode, bytes]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        try:
            return grpc.StatusCode.OK, stub(b"", metadata=metadata, timeout=5)
        except grpc.RpcError as error:
            failure = error
    assert isinstance(failure, grpc.Call)
    return failure.code(), b""


def test_handlers_see_the_authenticated_principal(custom_server: Bare) -> None:
    for token, expected in (
        (SERVICE_TOKEN, b"test-service/service"),
        (ADMIN_TOKEN, b"test-admin/admin"),
    ):
        code, answer = raw_call(custom_server.port, "/test.Read/Who", bearer_metadata(token))
        assert (code, answer) == (grpc.StatusCode.OK, expected)


def test_methods_outside_the_policy_are_denied(custom_server: Bare) -> None:
    port = custom_server.port
    assert raw_call(port, "/test.Unlisted/Who", ())[0] is grpc.StatusCode.UNAUTHENTICATED
    admin = bearer_metadata(ADMIN_TOKEN)
    assert raw_call(port, "/test.Unlisted/Who", admin)[0] is grpc.StatusCode.PERMISSION_DENIED
    # A method that does not exist is UNIMPLEMENTED, as without the interceptor.
    assert raw_call(port, "/test.Read/Nope", admin)[0] is grpc.StatusCode.UNIMPLEMENTED


def test_policy_rules() -> None:
    assert DEFAULT_POLICY.rule_for(f"/{EVENT_SERVICE}/RedeemOffer").roles == {Role.ADMIN}
    assert DEFAULT_POLICY.rule_for("/grpc.health.v1.Health/Check").open
    assert DEFAULT_POLICY.rule_for("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo").open
    for method in ("/other.Service/Method", "garbage", "", "/Method", "/grpc.health.v1.Health"):
        rule = DEFAULT_POLICY.rule_for(method)
        assert not rule.open, method
        assert not rule.roles, method


def test_server_without_credentials_refuses_everything_but_health() -> None:
    running = start_server(Settings(port=0, storage_url="memory://"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            for service, method in RPCS:
                for metadata in ((), bearer_metadata(ADMIN_TOKEN)):
                    assert call(channel, service, method, metadata) is (
                        grpc.StatusCode.UNAUTHENTICATED
                    )
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)  # type: ignore[attr-defined]
    finally:
        running.stop(0)


# --- the credentials file -------------------------------------------------------------


def test_bearer_token_parsing() -> None:
    assert bearer_token((("authorization", "Bearer abc-_.~+/="),)) == "abc-_.~+/="
    assert bearer_token((("other", "x"), ("authorization", "BEARER abc"))) == "abc"
    for value in ("Bearer", "Bearer ", "Bearer a b", "Basic abc", "abc", "Bearer a\tb"):
        assert bearer_token((("authorization", value),)) is None, value
    assert bearer_token(None) is None
    assert bearer_token((("authorization", b"Bearer abc"),)) is None


def entry(name: str = "a", role: str = "admin", token: str = "t") -> dict[str, str]:
    return {"name": name, "role": role, "token_sha256": token_digest(token)}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "expected a mapping with a list 'principals'"),
        ({"principals": []}, "'principals' is empty"),
        ({"principals": [entry()], "extra": 1}, "unknown top-level keys: extra"),
        ({"principals": ["x"]}, "principals[0]: expected a mapping"),
        ({"principals": [{**entry(), "token": "t"}]}, "plaintext 'token' found"),
        ({"principals": [{"name": "a", "role": "admin"}]}, "missing token_sha256"),
        ({"principals": [entry(role="root")]}, "principals[0] (a).role: 'root' is not one of"),
        ({"principals": [{**entry(), "token_sha256": "abc"}]}, "expected 64 hex digits"),
        ({"principals": [entry(), entry()]}, "principals[1] (a).name: duplicate"),
        ({"principals": [entry("a"), entry("b")]}, "the same token is listed twice"),
        ({"principals": [entry(name="")]}, "principals[0].name: expected a non-empty"),
    ],
)
def test_credentials_file_problems_are_named(document: object, message: str) -> None:
    with pytest.raises(CredentialsError) as raised:
        parse_credentials(document, "creds.yaml")
    assert message in str(raised.value)


def test_credentials_file_in_json(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"principals": [entry("ops", "service", "s3cret")]}))
    (credential,) = load_credentials(path)
    assert credential.principal.name == "ops"
    assert credential.principal.role is Role.SERVICE
    authenticator = Authenticator([credential])
    assert authenticator.authenticate(bearer_metadata("s3cret")) == credential.principal
    assert authenticator.authenticate(bearer_metadata("s3cre")) is None
    with pytest.raises(CredentialsError, match="cannot read credentials file"):
        load_credentials(tmp_path / "missing.yaml")


def test_development_credentials_are_created_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = ensure_dev_credentials(data)
    assert first.created
    assert stat.S_IMODE(first.tokens_file.stat().st_mode) == 0o600
    credentials = load_credentials(first.credentials_file)
    assert {c.principal.role for c in credentials} == {Role.ADMIN, Role.SERVICE}
    text = first.credentials_file.read_text()
    assert not any(token in text for token in first.tokens.values())
    second = ensure_dev_credentials(data)
    assert not second.created
    assert second.tokens == first.tokens
    # A deleted credentials file is derived again from the kept tokens.
    first.credentials_file.unlink()
    third = ensure_dev_credentials(data)
    assert not third.created
    assert third.credentials_file.read_text() == text
    first.tokens_file.write_text("{}")
    with pytest.raises(CredentialsError, match="delete it to regenerate"):
        ensure_dev_credentials(data)


# --- TLS ------------------------------------------------------------------------------


def test_tls_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="tls_key_file is set but tls_cert_file is not"):
        Settings(tls_key_file=Path("key.pem"))
    with pytest.raises(ValueError, match="tls_cert_file is set but tls_key_file is not"):
        Settings(tls_cert_file=Path("cert.pem"))
    with pytest.raises(ValueError, match="needs tls_cert_file"):
        Settings(tls_client_ca_file=Path("ca.pem"))
    with pytest.raises(ValueError, match="needs tls_cert_file"):
        Settings.load({"ENTITLEMENTS_TLS_CLIENT_CA_FILE": "ca.pem"})


def get_entitlement(channel: grpc.Channel) -> grpc.StatusCode:
    stub = entitlement_service_pb2.DESCRIPTOR.services_by_name["EntitlementService"]
    request = es.GetEntitlementRequest(user_id="tls-user", feature_id="offline_downloads")
    return call(channel, stub, stub.methods_by_name["GetEntitlement"], request=request)


def secure(
    port: int, server: Pem, client: Pem | None = None, token: str | None = SERVICE_TOKEN
) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=server.cert,
        private_key=client.key if client else None,
        certificate_chain=client.cert if client else None,
    )
    channel = grpc.secure_channel(
        f"127.0.0.1:{port}", credentials, options=[("grpc.use_local_subchannel_pool", 1)]
    )
    return with_bearer_token(channel, token) if token else channel


def test_tls_server_answers_over_a_secure_channel(tmp_path: Path) -> None:
    server_cert = make_cert("entitlements-server")
    running = tls_server(tmp_path, server_cert)
    try:
        with secure(running.port, server_cert) as channel:
            assert get_entitlement(channel) is grpc.StatusCode.OK
        plaintext = with_bearer_token(
            grpc.insecure_channel(f"127.0.0.1:{running.port}"), SERVICE_TOKEN
        )
        with plaintext:
            assert get_entitlement(plaintext) is grpc.StatusCode.UNAVAILABLE
        with secure(running.port, make_cert("impostor")) as untrusting:
            assert get_entitlement(untrusting) is grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop(0)


def test_mutual_tls_requires_a_client_certificate_from_the_ca(tmp_path: Path) -> None:
    server_cert = make_cert("entitlements-server")
    client_ca = make_cert("client-ca", ca=True)
    good_client = make_cert("billing-backend", client_ca)
    stranger = make_cert("stranger", make_cert("other-ca", ca=True))
    running = tls_server(tmp_path, server_cert, client_ca)
    try:
        with secure(running.port, server_cert) as no_cert:
            assert get_entitlement(no_cert) is grpc.StatusCode.UNAVAILABLE
        with secure(running.port, server_cert, stranger) as wrong_ca:
            assert get_entitlement(wrong_ca) is grpc.StatusCode.UNAVAILABLE
        with secure(running.port, server_cert, good_client) as channel:
            assert get_entitlement(channel) is grpc.StatusCode.OK
        # A client certificate does not replace the bearer token.
        with secure(running.port, server_cert, good_client, token=None) as tokenless:
            assert get_entitlement(tokenless) is grpc.StatusCode.UNAUTHENTICATED
    finally:
        running.stop(0)


def test_unreadable_tls_files_are_named(tmp_path: Path) -> None:
    settings = Settings(
        port=0,
        storage_url="memory://",
        tls_cert_file=tmp_path / "missing.pem",
        tls_key_file=tmp_path / "missing.key",
    )
    with pytest.raises(CredentialsError, match=r"cannot read tls_cert_file .*missing\.pem"):
        start_server(settings)
