"""Service configuration, read once at startup from defaults, environment and flags."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.catalog import EXAMPLE_CATALOG

DEFAULT_STORAGE_URL = "sqlite:///data/entitlements.db"
# Local files beside the default SQLite database: the generated development credentials.
DEFAULT_DATA_DIR = Path("data")
ENV_PREFIX = "ENTITLEMENTS_"
LOG_FORMATS = ("json", "text")
TRACING_MODES = ("off", "console", "otlp")
# Apple's spelling of the App Store environments (LOCAL_TESTING and Xcode skip the
# signature check: never accepted here).
APPLE_ENVIRONMENTS = ("Production", "Sandbox")


class SettingsError(ValueError):
    """A setting has a value the service cannot run with (reported to the operator)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting. The comment above a field is its documentation: `entitlements serve
    --help` and docs/SETTINGS.md are generated from it (setting_docs), so each field
    needs one."""

    # Address the gRPC port binds (0.0.0.0 or :: for every interface).
    host: str = "127.0.0.1"
    # Port of the gRPC server; 0 picks a free one. $PORT, when set, is the default.
    port: int = 50051
    # The store: sqlite:///relative/path.db, sqlite:////absolute/path.db, memory:// or
    # spanner://projects/P/instances/I/databases/D.
    storage_url: str = DEFAULT_STORAGE_URL
    # The catalog YAML file (default: the example catalog shipped with the service).
    catalog_path: Path = EXAMPLE_CATALOG
    # Entries of the per-process user state cache (one entry per user).
    cache_max_entries: int = 100_000
    # The longest cached state is kept. Writes through other workers and replicas reach
    # every cache through the store's change feed within feed_poll_seconds (plus the
    # poll's time), so this is only a safety net. 0 disables the cache.
    cache_ttl_seconds: float = 300.0
    # How often the store's change feed is read (service.usecases.freshness): by the
    # pod's one feed reader with several workers, by the worker itself with one.
    # 0 turns the feed off (only to measure its cost: writes of other processes are then
    # seen after cache_ttl_seconds, and watches see only this process's writes late).
    feed_poll_seconds: float = 0.1
    # WatchEntitlements streams a worker holds open at once; more are refused
    # RESOURCE_EXHAUSTED.
    max_watch_streams: int = 1000
    # WatchChanges streams (callers' near caches) a worker holds open at once; more are
    # refused RESOURCE_EXHAUSTED.
    max_change_streams: int = 1000
    # Worker processes sharing the port (SO_REUSEPORT), each with its own cache.
    # 0: one per core. `entitlements serve` only; start_server always runs one.
    workers: int = 0
    # Threads per worker for blocking store calls (the server itself is grpc.aio: cache
    # hits are answered on the event loop and need no thread).
    threads: int = 16
    # Concurrent RPCs a worker admits; beyond it callers get RESOURCE_EXHAUSTED at once,
    # before any of our code runs. 0: 256 (see service/grpc_api/server.py).
    max_concurrent_rpcs: int = 0
    # Admission by queueing delay (service/grpc_api/overload.py, CoDel): while the event
    # loop's lag has stayed above this target (ms) for a whole interval (ms), calls are
    # refused RESOURCE_EXHAUSTED at once. 0: never shed on delay (still measured).
    overload_target_ms: float = 25.0
    overload_interval_ms: float = 100.0
    # HTTP/2 streams (calls) one connection may have open at once (grpc.max_concurrent_streams);
    # 0: grpc's default, no limit. Off by default: under a burst, grpc-core refuses streams
    # beyond it (RST_STREAM REFUSED_STREAM) that grpcio clients report as UNAVAILABLE
    # (docs/OPERATIONS.md, "Overload").
    max_streams_per_connection: int = 0
    # A new connection that has not finished its TLS and HTTP/2 handshake within this long
    # is closed (grpc's default: 120 s, which let 4,000 idle sockets hold 72 MB).
    handshake_timeout_seconds: float = 10.0
    # A connection with no call for this long is closed (GOAWAY); clients reconnect.
    max_connection_idle_seconds: float = 600.0
    # Deadline given to RPCs that arrive without one, and the cap on any RPC's budget.
    max_rpc_seconds: float = 5.0
    # The most one store call may take (within the RPC's remaining budget), so that a slow
    # store leaves time to answer from stale cache or fail fast with UNAVAILABLE.
    store_timeout_seconds: float = 0.5
    # The most the store calls of one write may take (within the RPC's budget); a write
    # that runs out is UNAVAILABLE (it did not happen; retry with the same id).
    write_timeout_seconds: float = 2.0
    # How long past its freshness cached state may still be served, marked stale, when the
    # store fails or is too slow (stale-if-error). 0 disables it.
    max_staleness_seconds: float = 300.0
    # How often readiness probes the store (health NOT_SERVING while it is unreachable).
    readiness_interval_seconds: float = 2.0
    # On SIGTERM, in-flight RPCs get this long to finish.
    shutdown_grace_seconds: float = 5.0
    # Connections are closed after this age (plus a grace for in-flight RPCs), so clients
    # reconnect and rebalance across replicas and workers.
    max_connection_age_seconds: float = 300.0
    # How long in-flight RPCs of a connection past its max_connection_age_seconds may take.
    max_connection_age_grace_seconds: float = 30.0
    # Server-initiated keepalive pings on idle connections.
    keepalive_seconds: float = 60.0
    # Largest request accepted (bytes) and largest metadata (bytes); larger requests are
    # RESOURCE_EXHAUSTED. A full batch of 100 queries with 128-character ids is ~30 KB.
    max_request_bytes: int = 256 * 1024
    # Largest call metadata (headers) accepted, in bytes.
    max_metadata_bytes: int = 16 * 1024
    # Fault injection for drills and tests only: every store call waits this long first.
    fault_store_delay_ms: int = 0
    # Principals and the SHA-256 digests of their bearer tokens (YAML or JSON; see
    # service/auth.py). Unset: `entitlements serve` generates development credentials in
    # data_dir; a server started without any answers UNAUTHENTICATED to every protected RPC.
    credentials_file: Path | None = None
    # Where `entitlements serve` keeps generated development credentials.
    data_dir: Path = DEFAULT_DATA_DIR
    # The audit log of admin calls (JSON lines); unset: stderr.
    audit_log_file: Path | None = None
    # TLS on the server port: certificate chain and private key (PEM). With a client CA as
    # well, clients must present a certificate signed by it (mutual TLS).
    tls_cert_file: Path | None = None
    # The private key of tls_cert_file (PEM); set both or neither.
    tls_key_file: Path | None = None
    # Clients must present a certificate signed by this CA (PEM): mutual TLS. Needs
    # tls_cert_file and tls_key_file.
    tls_client_ca_file: Path | None = None
    # Prometheus metrics over HTTP on this port (same host as the gRPC port), summed across
    # worker processes by the supervisor; 0: no metrics (see service/grpc_api/metrics.py).
    metrics_port: int = 0
    # On SIGTERM, readiness turns NOT_SERVING at once while the server keeps serving for
    # this long (load balancers notice), then it stops with shutdown_grace_seconds.
    drain_delay_seconds: float = 0.0
    # Log lines as JSON (one object a line) or plain text for a terminal.
    log_format: str = "json"
    # OpenTelemetry tracing: "off", "console" (spans printed to stdout) or "otlp" (to the
    # collector of the standard OTEL_EXPORTER_OTLP_* variables); see
    # service/grpc_api/tracing.py.
    tracing: str = "off"
    # Store notifications over HTTP on this port (same host as the gRPC port, every
    # worker; docs/INGESTION.md): POST /notifications/app-store and /notifications/stripe,
    # /healthz. 0: off.
    notifications_port: int = 0
    # Apple's root certificates that App Store notifications must chain to: a
    # comma-separated list of DER or PEM files. Unset: App Store notifications are refused.
    apple_root_certificates: str = ""
    # The app's bundle id; App Store notifications for another bundle are refused.
    apple_bundle_id: str = ""
    # The app's Apple id (a number), required in the Production environment.
    apple_app_apple_id: int | None = None
    # The App Store environment accepted, in Apple's spelling: Sandbox or Production;
    # notifications of the other one are refused.
    apple_environment: str = "Production"
    # The App Store Server API (reconcile-app-store): the In-App Purchase key file (.p8),
    # its key id and the issuer id, from App Store Connect.
    apple_api_key_file: str = ""
    apple_api_key_id: str = ""
    apple_api_issuer_id: str = ""
    # Base URL of the App Store Server API; unset: Apple's for apple_environment. Tests
    # point it at a local stand-in.
    apple_api_url: str = ""
    # The signing secret of the Stripe webhook endpoint (whsec_...). Unset: Stripe
    # notifications are refused.
    stripe_webhook_secret: str = ""
    # A Stripe API key (a restricted key reading charges and invoices) to fetch the invoice
    # of a refund or dispute whose event names it only by id. Unset: such events are dead
    # letters (missing_data).
    stripe_api_key: str = ""
    # Base URL of the Stripe API; unset: Stripe's. Tests point it at a local stand-in.
    stripe_api_url: str = ""
    # Google Play RTDN: the Pub/Sub subscription to pull
    # (projects/P/subscriptions/S); unset: no Play subscriber. Honours PUBSUB_EMULATOR_HOST.
    play_subscription: str = ""
    # The Android package name whose notifications are accepted.
    play_package_name: str = ""
    # Base URL of the Google Play Developer API (purchases.subscriptionsv2); tests point
    # it at a local stand-in.
    play_api_url: str = "https://androidpublisher.googleapis.com"

    def __post_init__(self) -> None:
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be greater than 0, got {getattr(self, name)}")
        for name in _NOT_NEGATIVE:
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must not be negative, got {getattr(self, name)}")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            given, missing = (
                ("tls_key_file", "tls_cert_file")
                if self.tls_cert_file is None
                else ("tls_cert_file", "tls_key_file")
            )
            raise SettingsError(f"TLS: {given} is set but {missing} is not; set both or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise SettingsError(
                "TLS: tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file"
            )
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(
                f"log_format must be one of {', '.join(LOG_FORMATS)}, got {self.log_format!r}"
            )
        if self.apple_environment not in APPLE_ENVIRONMENTS:
            raise SettingsError(
                f"apple_environment must be one of {', '.join(APPLE_ENVIRONMENTS)}, "
                f"got {self.apple_environment!r}"
            )
        if self.tracing not in TRACING_MODES:
            raise SettingsError(
                f"tracing must be one of {', '.join(TRACING_MODES)}, got {self.tracing!r}"
            )

    @classmethod
    def load(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> Settings:
        """Defaults, overridden by ENTITLEMENTS_<FIELD> variables, overridden by flags
        (`overrides` whose value is not None)."""
        values: dict[str, Any] = {}
        # PORT (set by many platforms) is the port's default; ENTITLEMENTS_PORT and --port win.
        if environ.get("PORT"):
            values["port"] = _from_environment("port", int, environ["PORT"], env_name="PORT")
        for name, kind in _FIELD_TYPES.items():
            raw = environ.get(ENV_PREFIX + name.upper())
            if raw is not None:
                values[name] = _from_environment(name, kind, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        for name, kind in _FIELD_TYPES.items():
            if Path in _members(kind) and values.get(name) is not None:
                values[name] = Path(values[name])
        return cls(**values)


_POSITIVE = (
    "cache_max_entries",
    "max_watch_streams",
    "max_change_streams",
    "threads",
    "max_rpc_seconds",
    "store_timeout_seconds",
    "write_timeout_seconds",
    "readiness_interval_seconds",
    "max_connection_age_seconds",
    "keepalive_seconds",
    "handshake_timeout_seconds",
    "max_connection_idle_seconds",
    "overload_interval_ms",
    "max_request_bytes",
    "max_metadata_bytes",
)
_NOT_NEGATIVE = (
    "port",
    "feed_poll_seconds",
    "cache_ttl_seconds",
    "workers",
    "max_concurrent_rpcs",
    "overload_target_ms",
    "max_streams_per_connection",
    "max_staleness_seconds",
    "shutdown_grace_seconds",
    "max_connection_age_grace_seconds",
    "fault_store_delay_ms",
    "metrics_port",
    "drain_delay_seconds",
    "notifications_port",
)

# Each setting's type, resolved from the annotations (they are strings under
# `from __future__ import annotations`).
_FIELD_TYPES: dict[str, Any] = {
    field.name: typing.get_type_hints(Settings)[field.name]
    for field in dataclasses.fields(Settings)
}


def _members(kind: Any) -> tuple[Any, ...]:
    """The types of a union (`Path | None` -> (Path, NoneType)), or the type itself."""
    return typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)


def _from_environment(name: str, kind: Any, raw: str, env_name: str | None = None) -> Any:
    members = _members(kind)
    if type(None) in members and raw == "":
        return None
    (converter,) = (member for member in members if member is not type(None))
    try:
        return converter(raw)
    except ValueError as exc:
        raise SettingsError(
            f"{env_name or ENV_PREFIX + name.upper()}: expected a {converter.__name__}, got {raw!r}"
        ) from exc


# Variables of the ENTITLEMENTS_ prefix that are not settings: the CLI's client commands
# read them (service.cli).
CREDENTIAL_ENV = ENV_PREFIX + "CREDENTIAL"
TARGET_ENV = ENV_PREFIX + "TARGET"
CLIENT_ENVIRONMENT = (CREDENTIAL_ENV, TARGET_ENV)
# The settings whose values are one of a few words.
SETTING_CHOICES: dict[str, tuple[str, ...]] = {
    "log_format": LOG_FORMATS,
    "tracing": TRACING_MODES,
    "apple_environment": APPLE_ENVIRONMENTS,
}


def setting_environment_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def setting_docs() -> dict[str, str]:
    """Each setting's documentation: the comment lines right above its field in Settings,
    joined into one paragraph (the one source of `serve --help` and docs/SETTINGS.md)."""
    docs: dict[str, str] = {}
    comment: list[str] = []
    for line in inspect.getsource(Settings).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        field = re.match(r"    (\w+): ", line)
        if field and field.group(1) in _FIELD_TYPES:
            docs[field.group(1)] = " ".join(comment)
        comment = []
    return docs


def unknown_environment_variables(
    environ: Mapping[str, str] = os.environ,
) -> list[tuple[str, str | None]]:
    """ENTITLEMENTS_* variables that name no setting (nor a variable of the CLI), each with
    the closest known name (None when nothing is close): a misspelled setting is otherwise
    silently ignored."""
    known = [setting_environment_name(name) for name in _FIELD_TYPES] + list(CLIENT_ENVIRONMENT)
    # Compared without the prefix, which every name shares.
    suffixes = {name.removeprefix(ENV_PREFIX): name for name in known}
    unknown = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            closest = difflib.get_close_matches(
                name.removeprefix(ENV_PREFIX), suffixes, n=1, cutoff=0.6
            )
            unknown.append((name, suffixes[closest[0]] if closest else None))
    return unknown
