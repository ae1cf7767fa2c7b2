"""Which server worker process holds a client connection (Linux /proc).

SO_REUSEPORT hashes each connection to one worker's listening socket, so a client's
channels can land unevenly: with 8 connections over 2 workers a 6/2 split is common, and
the busier worker then saturates first and dominates the tail. The load generator opens
channels one at a time and keeps only those that even the split, using this module to see
where each landed: the client's new socket inode gives its local port (/proc/net/tcp), the
server's end of that connection gives an inode, and the worker that holds that inode among
its file descriptors is the one serving the connection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_ESTABLISHED = "01"


@dataclass(frozen=True, slots=True)
class TcpEntry:
    local_port: int
    remote_port: int
    inode: int


def tcp_entries() -> list[TcpEntry]:
    entries = []
    for table in _TCP_TABLES:
        try:
            with open(table) as handle:
                lines = handle.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _ESTABLISHED:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            entries.append(TcpEntry(local_port, remote_port, int(fields[9])))
    return entries


def socket_inodes(pid: int | str) -> set[int]:
    """Inodes of the sockets process `pid` holds open (empty when it cannot be read)."""
    inodes: set[int] = set()
    folder = f"/proc/{pid}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"{folder}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def own_socket_inodes() -> set[int]:
    return socket_inodes("self")


def worker_of(new_inodes: set[int], server_port: int, worker_pids: tuple[int, ...]) -> int | None:
    """The pid of the worker serving the connection among `new_inodes` (client sockets
    this process just opened) to `server_port`, or None when it cannot be told."""
    entries = tcp_entries()
    client_ports = {
        e.local_port for e in entries if e.inode in new_inodes and e.remote_port == server_port
    }
    if len(client_ports) != 1:
        return None
    (client_port,) = client_ports
    server_inodes = {
        e.inode
        for e in entries
        if e.local_port == server_port and e.remote_port == client_port and e.inode
    }
    for pid in worker_pids:
        if socket_inodes(pid) & server_inodes:
            return pid
    return None
