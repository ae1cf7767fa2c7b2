-- The change feed (storage.feed): one row per user whose cached state a committed write
-- changed, written in the write's transaction. `seq` is the commit order (AUTOINCREMENT:
-- never reused, and a rolled-back write rolls its numbers back, so committed rows are
-- contiguous): a reader keeps the last seq it applied and reads the rows after it.
-- `version` is the user's version after the write, NULL for a household member whose
-- manager's state changed. Only the newest rows are kept (storage.sqlite.queries).
CREATE TABLE user_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    version INTEGER
);
