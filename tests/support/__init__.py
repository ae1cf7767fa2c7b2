"""Helpers every test folder shares, imported from here and never from another test module.

- harness: the in-process real server on a free loopback port (the `harness` fixture,
  registered for every folder by tests/conftest.py), its tokens, fixed clock and
  credentials file.
- processes: `entitlements serve` as a real child process (server_process, await_serving,
  worker_pids).
- clients: stubs and reads on a running server (writer, grant_request, granted,
  channels_to_each_worker).
- metrics: a free port and the Prometheus endpoint's samples (free_port, scrape, value).
- polling: the one `eventually()` (and `seconds_until`, which measures the wait).
- cli: the `entitlements` command as a child (run_cli, serve, Served, dev tokens).
- faulty: an in-process server over a fault-injecting store (faulty_server, code_of).
- sqlite_server: an in-process server on an existing SQLite file with its Client, and a
  write lock held elsewhere.
- tls: certificates made on the spot and a server over (mutual) TLS.
- rpcs: requests and reads through `harness` (ts, event, entitled, details_of, household
  add and remove).
- catalog: the example catalog as a mutable document and its parse problems.
- packaging: the repository root and commands run in a fresh venv (package tests).
- lifecycle: the subscription lifecycle oracle and its generated lives (unit, contract
  and fuzz suites).
- clocks: MovingClock, a clock a test moves for the server (start_server(clock=...))
  instead of sleeping.
"""
