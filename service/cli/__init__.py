"""The `entitlements` command: serve, migrate and seed the store, read its history, and call
the service by hand.

Modules: `app` (run one command, report configuration and input errors), `parser` (the
command line), `store_commands` (the commands that open the store: serve, migrate, seed-demo,
history), `rpc_commands` (the commands that call a server), `watch` (the streaming `watch`
command), `call` (the one way they call: channel, credential, TLS, the printed RPC error),
`choices` (enum flags from the domain enums), `printers` (the output), `errors`
(UsageError).
"""

from service.cli.app import main

__all__ = ["main"]
