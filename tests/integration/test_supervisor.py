"""`entitlements serve` as an operator meets it, through real processes on loopback: a
worker whose restart fails is retried while the other workers keep serving (the server
gives up only past its crash-loop budget); a configuration error is one `error:` line and
exit status 2 whatever the number of workers; a port that another server (or any socket)
already has is refused instead of silently shared."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import entitlement_service_pb2_grpc
from service.catalog import EXAMPLE_CATALOG
from service.grpc_api.auth import with_bearer_token
from service.grpc_api.workers import MAX_RESTARTS
from tests.support.harness import SERVICE_TOKEN, write_test_credentials
from tests.support.polling import eventually
from tests.support.processes import ENTITLEMENTS, ServerProcess, server_process, worker_pids

pytestmark = pytest.mark.subprocess

INVALID_CATALOG = "features: [unclosed\n"


def read_on_a_new_connection(target: str) -> grpc.StatusCode:
    """One read on a connection of its own (the kernel picks the worker that takes it)."""
    channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
    stub = entitlement_service_pb2_grpc.EntitlementServiceStub(
        with_bearer_token(channel, SERVICE_TOKEN)
    )
    try:
        stub.GetEntitlement(
            es.GetEntitlementRequest(user_id="reader", feature_id="shuffle_play"), timeout=5
        )
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()
    finally:
        channel.close()


def serve_while(server: ServerProcess, done: Callable[[], bool], timeout: float) -> None:
    """Until `done()`: the server keeps running and answers every read (each on a new
    connection, so on whichever worker listens)."""

    def serving_until_done() -> bool:
        if done():
            return True
        assert server.process.poll() is None, "the server stopped:\n" + "".join(server.output)
        assert read_on_a_new_connection(server.target) is grpc.StatusCode.OK
        return False

    eventually(serving_until_done, timeout, 0.1, lambda: "timed out:\n" + "".join(server.output))


def kill_worker(server: ServerProcess, pid: int) -> None:
    """kill -9 one worker, and wait until the supervisor saw it die (connections the kernel
    queued on its listener meanwhile are reset: no server can answer those)."""
    os.kill(pid, signal.SIGKILL)
    eventually(
        lambda: bool(lines_with(server, f"(pid {pid}) died")),
        10,
        0.02,
        lambda: "".join(server.output),
    )


def lines_with(server: ServerProcess, *parts: str) -> list[str]:
    return [line for line in list(server.output) if all(part in line for part in parts)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- a failed restart is retried; the other workers serve meanwhile ----------------------


def test_a_restart_failing_on_a_locked_database_is_retried_while_the_other_worker_serves(
    tmp_path: Path,
) -> None:
    """Another process holds SQLite's write lock while worker 0 is killed: its replacement
    (which opens and migrates the database) meets "database is locked" and fails. The
    supervisor retries it and worker 1 serves throughout; once the lock is released, the
    replacement comes up. (Before: the first failed restart stopped the whole server.)"""
    db = tmp_path / "locked.db"
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    with server_process(db, credentials, workers=2) as server:
        first, second = worker_pids(server)
        lock = sqlite3.connect(db, isolation_level=None, timeout=10)
        try:
            lock.execute("BEGIN IMMEDIATE")  # the write lock, held by another process
            kill_worker(server, first)
            # Until the replacement failed for real (or, were opening the database to need
            # no write lock, came up anyway): worker 1 answers every read.
            serve_while(
                server,
                lambda: bool(
                    lines_with(server, "worker 0", "failed to start")
                    or lines_with(server, "worker 0 restarted")
                ),
                timeout=60,
            )
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        serve_while(server, lambda: bool(lines_with(server, "worker 0 restarted")), timeout=60)
        (restarted,) = lines_with(server, "worker 0 restarted")
        replacement = int(re.findall(r"pid (\d+)", restarted)[0])
        assert alive(second)
        assert alive(replacement)
        assert not lines_with(server, "worker 1 (pid")  # worker 1 never stopped
        for _ in range(8):
            assert read_on_a_new_connection(server.target) is grpc.StatusCode.OK
    assert server.process.returncode == 0, "".join(server.output)


def test_a_worker_that_cannot_start_is_retried_with_backoff_until_it_can(
    tmp_path: Path,
) -> None:
    """Worker 0 is killed while the catalog file is broken, so every replacement fails to
    start; each failure is retried (after a growing pause) while worker 1 serves; once
    the file is fixed the next attempt comes up."""
    db = tmp_path / "retry.db"
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    catalog = tmp_path / "catalog.yaml"
    shutil.copyfile(EXAMPLE_CATALOG, catalog)
    with server_process(db, credentials, "--catalog", str(catalog), workers=2) as server:
        first, second = worker_pids(server)
        catalog.write_text(INVALID_CATALOG)
        kill_worker(server, first)
        serve_while(server, lambda: len(lines_with(server, "worker 0", "failed to start")) >= 2, 30)
        shutil.copyfile(EXAMPLE_CATALOG, catalog)
        serve_while(server, lambda: bool(lines_with(server, "worker 0 restarted")), 30)
        failures = lines_with(server, "worker 0", "failed to start")
        assert all("catalog" in line for line in failures), failures
        assert "restarting it in 0.25 s" in failures[0]
        assert "in 0.5 s" in failures[1]
        assert alive(second)
        assert read_on_a_new_connection(server.target) is grpc.StatusCode.OK
    assert server.process.returncode == 0, "".join(server.output)


def test_past_the_crash_loop_budget_the_server_gives_up(tmp_path: Path) -> None:
    """A replacement that can never start is retried MAX_RESTARTS times in the restart
    window, the other worker serving meanwhile; then the supervisor stops (exit 1). (The
    kill -9 that began it does not count: killed workers are the world's doing.)"""
    db = tmp_path / "loop.db"
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    catalog = tmp_path / "catalog.yaml"
    shutil.copyfile(EXAMPLE_CATALOG, catalog)
    with server_process(db, credentials, "--catalog", str(catalog), workers=2) as server:
        first, _ = worker_pids(server)
        catalog.write_text(INVALID_CATALOG)
        kill_worker(server, first)
        serve_while(
            server,
            lambda: len(lines_with(server, "worker 0", "failed to start")) >= MAX_RESTARTS - 1,
            30,
        )
        assert server.process.wait(timeout=30) == 1
        time.sleep(0.5)  # the output drained
    assert len(lines_with(server, "worker 0", "failed to start")) == MAX_RESTARTS + 1
    assert lines_with(server, "giving up")


# --- configuration errors: checked once, before any worker starts ----------------------


CORRUPT_DATABASE = b"this is not a database file, " * 200


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    "problem", ["missing catalog", "bad storage URL", "credentials", "TLS", "corrupt database"]
)
def test_a_configuration_error_is_one_error_line_and_exit_2(
    tmp_path: Path, problem: str, workers: int
) -> None:
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    db = tmp_path / "config.db"
    args = ["--storage", f"sqlite:///{db}"]
    env = {
        **os.environ,
        "ENTITLEMENTS_CREDENTIALS_FILE": str(credentials),
        "ENTITLEMENTS_DATA_DIR": str(tmp_path / "data"),
    }
    expected = {
        "missing catalog": "no-such-catalog.yaml",
        "bad storage URL": "unsupported storage URL",
        "credentials": "cannot read credentials file",
        "TLS": "TLS: cannot read tls_cert_file",
        "corrupt database": "not a database",
    }[problem]
    if problem == "missing catalog":
        args += ["--catalog", str(tmp_path / "no-such-catalog.yaml")]
    elif problem == "bad storage URL":
        args = ["--storage", "postgres://localhost/entitlements"]
    elif problem == "credentials":
        env["ENTITLEMENTS_CREDENTIALS_FILE"] = str(tmp_path / "no-such-credentials.yaml")
    elif problem == "TLS":
        env["ENTITLEMENTS_TLS_CERT_FILE"] = str(tmp_path / "no-such-cert.pem")
        env["ENTITLEMENTS_TLS_KEY_FILE"] = str(tmp_path / "no-such-key.pem")
    else:
        db.write_bytes(CORRUPT_DATABASE)
    result = subprocess.run(
        [ENTITLEMENTS, "serve", "--port", "0", "--workers", str(workers), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert expected in result.stderr, output
    assert "Traceback" not in output, output
    assert "worker" not in output, output
    assert len(result.stderr.splitlines()) <= 3, output
    if problem == "corrupt database":
        assert db.read_bytes() == CORRUPT_DATABASE  # left as it was


# --- the port: ours alone ----------------------------------------------------------------


def serve_on(port: int, *args: str, workers: int) -> subprocess.CompletedProcess[str]:
    """`entitlements serve` on `port`, expected to refuse at once; a server that starts
    instead is stopped and reported."""
    process = subprocess.Popen(
        [ENTITLEMENTS, "serve", "--port", str(port), "--workers", str(workers), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        stdout, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
        pytest.fail(f"serve on a port in use started instead of refusing:\n{stdout}{stderr}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def assert_refused(result: subprocess.CompletedProcess[str], port: int) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f":{port}" in error
    assert "already in use" in error
    assert "serving on" not in result.stdout


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_refuses_a_port_another_server_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """A server on SQLite, then another on a store of its own on the same port: the second
    must not start (before, both reported serving and split the connections between two
    stores)."""
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    monkeypatch.setenv("ENTITLEMENTS_CREDENTIALS_FILE", str(credentials))
    with server_process(tmp_path / "first.db", credentials, workers=2) as first:
        port = int(first.target.rsplit(":", 1)[1])
        # Another SQLite file (memory:// runs one worker only).
        other = f"sqlite:///{tmp_path / 'second.db'}"
        result = serve_on(port, "--storage", other, workers=workers)
        assert_refused(result, port)
        # On the wildcard address too (it covers the loopback one).
        assert_refused(
            serve_on(port, "--host", "0.0.0.0", "--storage", "memory://", workers=1), port
        )
        for _ in range(6):  # the first server's workers take every connection
            assert read_on_a_new_connection(first.target) is grpc.StatusCode.OK
        assert first.process.poll() is None
    assert first.process.returncode == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_refuses_a_port_any_socket_listens_on_with_so_reuseport(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    monkeypatch.setenv(
        "ENTITLEMENTS_CREDENTIALS_FILE", str(write_test_credentials(tmp_path / "c.yaml"))
    )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        other = f"sqlite:///{tmp_path / 'other.db'}"  # memory:// runs one worker only
        assert_refused(serve_on(port, "--storage", other, workers=workers), port)


def test_a_stopped_server_s_port_can_be_served_again_at_once(tmp_path: Path) -> None:
    """The check must not mistake what a stopped server leaves behind (its connections in
    TIME_WAIT) for another server: the same port is served again right after."""
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    db = tmp_path / "again.db"
    channels: list[grpc.Channel] = []
    with server_process(db, credentials, workers=2) as first:
        port = first.target.rsplit(":", 1)[1]
        for _ in range(4):  # connections still open when the server stops and closes them
            channel = grpc.insecure_channel(
                first.target, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            grpc.channel_ready_future(channel).result(timeout=10)
            channels.append(channel)
    assert first.process.returncode == 0
    try:
        with server_process(db, credentials, "--port", port, workers=2) as second:
            assert second.target.endswith(f":{port}")
            assert read_on_a_new_connection(second.target) is grpc.StatusCode.OK
    finally:
        for channel in channels:
            channel.close()


def test_a_kill_9_loop_does_not_stop_the_server(tmp_path: Path) -> None:
    """Workers killed from outside (kill -9, the OOM killer) more often than the crash-loop
    budget allows are still replaced: only failed starts count as a crash loop."""
    db = tmp_path / "kill-loop.db"
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    with server_process(db, credentials, workers=2) as server:
        pids = worker_pids(server)
        for round_ in range(MAX_RESTARTS + 3):
            victim = pids[round_ % 2]
            kill_worker(server, victim)
            restarted = f"worker {round_ % 2} restarted (pid "
            times = round_ // 2 + 1
            serve_while(
                server,
                lambda restarted=restarted, times=times: (  # type: ignore[misc]
                    len(lines_with(server, restarted)) >= times
                ),
                timeout=20,
            )
            line = lines_with(server, restarted)[-1]
            pids[round_ % 2] = int(re.search(r"\(pid (\d+)\)", line).group(1))  # type: ignore[union-attr]
        assert server.process.poll() is None
        assert read_on_a_new_connection(server.target) is grpc.StatusCode.OK
