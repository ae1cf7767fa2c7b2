"""The SQLite change feed read (storage/sqlite/queries.read_changes) when a write commits
between its two statements: found by `make bench-client`, where a near cache (and the
server's own cache) never saw one write, because the read reported a position past a
change it had not returned."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage.feed import Change
from storage.sqlite import SqliteRepository, queries


def test_a_change_committed_between_the_reads_statements_is_not_skipped(tmp_path: Path) -> None:
    db = tmp_path / "feed.db"
    SqliteRepository(db).close()  # migrated
    writer = sqlite3.connect(db, isolation_level=None)
    reader = sqlite3.connect(db, isolation_level=None)

    def commit(user: str) -> None:
        writer.execute("BEGIN IMMEDIATE")
        queries.publish_changes(writer, [Change(user, 1)])
        writer.execute("COMMIT")

    commit("before")
    position = queries.read_changes(reader, 0, 100).position

    def commit_before_the_second_statement(statement: str) -> None:
        if "sqlite_sequence" in statement:
            reader.set_trace_callback(None)
            commit("between")

    reader.set_trace_callback(commit_before_the_second_statement)
    empty = queries.read_changes(reader, int(position), 100)
    assert empty.changes == ()
    # Nothing after the asked position had been seen: the change committed meanwhile
    # must come in the next read, not be stepped over.
    after = queries.read_changes(reader, int(empty.position), 100)
    assert [c.user_id for c in after.changes] == ["between"]
    writer.close()
    reader.close()
