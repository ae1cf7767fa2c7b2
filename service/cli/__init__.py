"""The `entitlements` command: serve, migrate and seed the store, read its history, and call
the service by hand.

Modules: `app` (run one command, report configuration and input errors), `parser` (the
command line; `parser_flags` the flags commands share, `parser_reads` and `parser_writes`
the client commands' lines), `store_commands` (the commands that open the store: serve,
migrate, seed-demo), `rpc_commands` (the commands that read from a server, history
included), `write_commands` (the commands that write through a server), `watch` (the
streaming `watch` command), `call` (the one way they call: channel, credential, TLS, the
printed RPC error), `choices` (enum flags from the domain enums), `printers` (the output),
`errors` (UsageError).
"""

from service.cli.app import main

__all__ = ["main"]
