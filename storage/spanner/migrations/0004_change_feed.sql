-- The change feed (storage.feed, storage/spanner/changes.py): one row per user whose
-- cached state a committed write changed, written in the write's transaction with the
-- commit timestamp. `Version` is the user's version after the write, NULL for a household
-- member whose manager's state changed.
-- Key: `Shard` first (a hash of the writing user, among a fixed few), so that inserts
-- spread over that many key ranges instead of all landing at the end of one (a key that
-- starts with a timestamp is a write hotspot); readers read all shards at once. Then the
-- commit timestamp, the writing user (transactions that write the same user are ordered
-- and never share a timestamp) and the change's index in its write: unique, and the
-- feed's order.
-- Spanner deletes rows older than a day (TTL; the reader reports a gap for a position
-- older than that). IF NOT EXISTS: a migration may run twice (storage.spanner.schema).
CREATE TABLE IF NOT EXISTS UserChanges (
    Shard INT64 NOT NULL,
    CommitTs TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true),
    WriterId STRING(MAX) NOT NULL,
    Seq INT64 NOT NULL,
    UserId STRING(MAX) NOT NULL,
    Version INT64,
) PRIMARY KEY (Shard, CommitTs, WriterId, Seq),
  ROW DELETION POLICY (OLDER_THAN(CommitTs, INTERVAL 1 DAY));
