"""The server's port: claimed by the parent before any worker starts, so a port another
server holds is refused instead of silently shared through SO_REUSEPORT."""

from __future__ import annotations

import errno
import socket
from typing import Any


class AddressUnavailable(Exception):
    """The server's address cannot be claimed: the port is in use (by another server, or
    anything else bound to it), or the address is not one of this host's."""


def reserve_port(host: str) -> socket.socket:
    """A bound (not listening) SO_REUSEPORT socket on a free port: it keeps the port ours
    while the workers bind it too, and takes no connections itself."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reservation = socket.socket(family, socket.SOCK_STREAM)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reservation.bind((host, 0))
    return reservation


def claim_port(host: str, port: int) -> socket.socket:
    """Binds host:port (port 0: a free one) for this server, or raises AddressUnavailable
    when anything else has the port: a listener (with SO_REUSEPORT or not: another
    `serve`, on whatever store) or a socket holding it bound (another server's claim).

    The claim is bound with SO_REUSEADDR and without SO_REUSEPORT, so the bind fails on
    any such socket, but not on connections a previous server left in TIME_WAIT. Then
    SO_REUSEADDR is cleared, so that a later claim conflicts with this one even while no
    worker listens, and SO_REUSEPORT is set, so that our workers' listeners (gRPC binds
    with SO_REUSEPORT) join it. It takes no connections itself: it never listens."""
    family, address = _resolve(host, port)
    claim = socket.socket(family, socket.SOCK_STREAM)
    try:
        claim.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        claim.bind(address)
        claim.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        claim.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError as error:
        claim.close()
        if error.errno == errno.EADDRINUSE:
            raise AddressUnavailable(
                f"cannot serve on {host}:{port}: the port is already in use (another "
                "server listens on it, or holds it); choose another port or stop that server"
            ) from error
        raise AddressUnavailable(f"cannot serve on {host}:{port}: {error.strerror}") from error
    return claim


def _resolve(host: str, port: int) -> tuple[socket.AddressFamily, Any]:
    """The family and socket address of the first address `host` names ("[::1]" too)."""
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        found = socket.getaddrinfo(
            name or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        raise AddressUnavailable(f"cannot serve on {host}:{port}: {error.strerror}") from error
    family, _type, _proto, _name, address = found[0]
    return family, address
