-- The idempotent write path (AccountRepository.apply and history), interleaved in Users
-- like the state. Neither table is part of AccountState: writing a user's state
-- (update/apply) replaces only the child tables of 0001 and never touches these rows.

-- One row per write request a user made, keyed by the RPC family (`Kind`: "event",
-- "grant", "revoke", "redeem") and the client-supplied id. A repeat with the same
-- fingerprint is answered from `Response` (JSON text, keys sorted) and `Version` (the
-- user's version after the original write); another fingerprint is a conflict.
CREATE TABLE IF NOT EXISTS ProcessedRequests (
    UserId STRING(MAX) NOT NULL,
    Kind STRING(MAX) NOT NULL,
    RequestId STRING(MAX) NOT NULL,
    Fingerprint STRING(MAX) NOT NULL,
    Response STRING(MAX) NOT NULL,
    Version INT64 NOT NULL,
    RecordedAt TIMESTAMP NOT NULL,
    CONSTRAINT ProcessedRequestsVersionPositive CHECK (Version >= 1),
) PRIMARY KEY (UserId, Kind, RequestId),
  INTERLEAVE IN PARENT Users ON DELETE CASCADE;

-- Append-only history of what happened to a user, for support. Keyed by the user's
-- version after the write that appended the entry and the entry's index in that write:
-- a transaction re-run after ABORTED writes the same keys, so it can never duplicate an
-- entry, and the key order is the order of appending.
CREATE TABLE IF NOT EXISTS History (
    UserId STRING(MAX) NOT NULL,
    Version INT64 NOT NULL,
    Seq INT64 NOT NULL,
    Kind STRING(MAX) NOT NULL,
    Reference STRING(MAX) NOT NULL,
    EffectiveAt TIMESTAMP NOT NULL,
    RecordedAt TIMESTAMP NOT NULL,
    Summary STRING(MAX) NOT NULL,
    CONSTRAINT HistoryVersionPositive CHECK (Version >= 1),
) PRIMARY KEY (UserId, Version, Seq),
  INTERLEAVE IN PARENT Users ON DELETE CASCADE;
