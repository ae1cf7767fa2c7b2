#!/usr/bin/env python3
"""A gRPC health probe (grpc.health.v1.Health/Check), standalone: it needs only grpcio and
grpcio-health-checking, which the image has anyway. Exit status 0 when the service is SERVING,
1 otherwise (NOT_SERVING, unknown service, unreachable, timeout), 2 on bad usage.

    python /app/healthcheck.py                       # the server as a whole ("")
    python /app/healthcheck.py --service liveness    # the liveness service (not the store)
    python /app/healthcheck.py --tls-ca ca.pem --tls-cert c.pem --tls-key k.pem

Outside the image, run it with the service's Python (`.venv/bin/python deploy/healthcheck.py
--address HOST:PORT` after `make setup`): another Python lacks grpcio, and it says so.
The Dockerfile's HEALTHCHECK runs it; Kubernetes uses its own gRPC probes (deploy/kubernetes/
deployment.yaml) unless the server port is TLS, which those cannot speak: then use this
script as an exec probe with the --tls-* flags.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

try:
    import grpc
    from grpc_health.v1 import health_pb2
except ImportError as missing:  # run by a Python without the service's packages
    print(
        f"healthcheck.py needs grpcio and grpcio-health-checking ({missing}). Run it with the "
        "service's Python: in a checkout after `make setup`, `.venv/bin/python "
        "deploy/healthcheck.py --address HOST:PORT`; in a pod, `kubectl exec POD -- python "
        "/app/healthcheck.py`",
        file=sys.stderr,
    )
    sys.exit(2)

SERVING = health_pb2.HealthCheckResponse.SERVING
CHECK_METHOD = "/grpc.health.v1.Health/Check"


def _default_address() -> str:
    # As the server reads them: ENTITLEMENTS_PORT wins over PORT.
    port = os.environ.get("ENTITLEMENTS_PORT") or os.environ.get("PORT") or "50051"
    return f"127.0.0.1:{port}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--address",
        default=_default_address(),
        help="host:port (default 127.0.0.1:$ENTITLEMENTS_PORT, else $PORT, else 50051)",
    )
    parser.add_argument("--service", default="", help='service name to check (default "")')
    parser.add_argument("--timeout", type=float, default=2.0, help="deadline in seconds")
    parser.add_argument("--tls-ca", type=Path, help="CA to trust (PEM): use TLS")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (PEM), mutual TLS")
    parser.add_argument("--tls-key", type=Path, help="client private key (PEM), mutual TLS")
    parser.add_argument(
        "--tls-server-name", help="name the server certificate must carry (default: host)"
    )
    return parser


def _channel(args: argparse.Namespace) -> grpc.Channel:
    if args.tls_ca is None and args.tls_cert is None and args.tls_key is None:
        return grpc.insecure_channel(args.address)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=args.tls_ca.read_bytes() if args.tls_ca else None,
        private_key=args.tls_key.read_bytes() if args.tls_key else None,
        certificate_chain=args.tls_cert.read_bytes() if args.tls_cert else None,
    )
    options = []
    if args.tls_server_name:
        options.append(("grpc.ssl_target_name_override", args.tls_server_name))
    return grpc.secure_channel(args.address, credentials, options=options)


def check(args: argparse.Namespace) -> tuple[bool, str]:
    """(serving, what to print)."""
    with _channel(args) as channel:
        # The method itself rather than health_pb2_grpc.HealthStub, whose stubs are untyped.
        health_check = channel.unary_unary(
            CHECK_METHOD,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            response: health_pb2.HealthCheckResponse = health_check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            name = code.name if code is not None else "ERROR"
            return False, f"{args.address} {args.service!r}: {name}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == SERVING, f"{args.address} {args.service!r}: {status}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        serving, text = check(args)
    except (OSError, ValueError) as error:
        print(f"healthcheck: {error}", file=sys.stderr)
        return 2
    print(text, file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
