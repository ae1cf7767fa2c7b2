"""The consistency token of the last write to each user, remembered by the CLI so that
its reads see its own writes (read-your-writes) without copying tokens by hand.

Why automatic rather than only printed: a read right after a write may be served by
another worker (or replica) whose cache has not seen the write yet; a token in the read
rules that out, and a person typing commands, or a script chaining them, should not have
to thread it through. The tokens live in the data folder (service.cli.locations), next
to the development tokens: local state of one checkout, owner-only, gone with `data/`.
They are keyed by server address and user. Passing one is always safe: a token only sets
a floor on the state's version (a token older than the user's state costs nothing, one
from a store since reset costs one store read), and never changes an answer otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TOKENS_FILE = "cli-consistency-tokens.json"
# Users remembered per server address; the oldest are forgotten first.
MAX_USERS = 1000


class RememberedTokens:
    def __init__(self, data_dir: Path | None) -> None:
        self.path = None if data_dir is None else data_dir / TOKENS_FILE

    def get(self, target: str, user_id: str) -> str:
        """The token of the last write to `user_id` through `target`; "" when none."""
        token = self._read().get(target, {}).get(user_id, "")
        return token if isinstance(token, str) else ""

    def remember(self, target: str, user_id: str, token: str) -> bool:
        """Keeps `token` as the user's last; False when there is no data folder (or it
        cannot be written), so the caller shows the token instead."""
        if self.path is None or not token:
            return False
        tokens = self._read()
        users = tokens.setdefault(target, {})
        users.pop(user_id, None)  # re-inserted last: the most recent
        users[user_id] = token
        for oldest in list(users)[: max(0, len(users) - MAX_USERS)]:
            del users[oldest]
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(tokens, out, indent=1, sort_keys=True)
            os.replace(staging, self.path)  # atomic: a concurrent reader sees old or new
        except OSError:
            staging.unlink(missing_ok=True)
            return False
        return True

    def _read(self) -> dict[str, dict[str, str]]:
        if self.path is None:
            return {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # none yet, or damaged: forgetting is safe (reads just lack a floor)
        if not isinstance(raw, dict):
            return {}
        return {t: u for t, u in raw.items() if isinstance(u, dict)}
