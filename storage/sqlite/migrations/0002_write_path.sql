-- The idempotent write path (AccountRepository.apply and history).
-- Neither table is part of AccountState: writing a user's state (update/apply) replaces
-- only the child tables of 0001 and never touches these rows.

-- One row per write request a user made, keyed by the RPC family (`kind`: "event",
-- "grant", "revoke", "redeem") and the client-supplied id. A repeat with the same
-- fingerprint is answered from `response` (JSON text, keys sorted) and `version` (the
-- user's version after the original write); another fingerprint is a conflict.
CREATE TABLE processed_requests (
    user_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    request_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    response TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (user_id, kind, request_id)
);

-- Append-only history of what happened to a user, for support. `seq` is the global
-- insertion order (AUTOINCREMENT: never reused), so a user's entries read oldest first
-- ORDER BY seq. `version` is the user's version after the write that appended the entry.
CREATE TABLE history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    reference TEXT NOT NULL,
    effective_at TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    summary TEXT NOT NULL
);

CREATE INDEX history_by_user ON history (user_id, seq);
