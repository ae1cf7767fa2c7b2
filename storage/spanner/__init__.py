"""Cloud Spanner backend (google-cloud-spanner): the production store.

Selected with the storage URL `spanner://projects/P/instances/I/databases/D`. Works
unchanged against Cloud Spanner (credentials from the environment: Application Default
Credentials) and against the emulator ($SPANNER_EMULATOR_HOST; with emulator 1.5.28 also
GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_FOR_RW=false, see docs/SPANNER.md).

Schema (migrations/, applied by `entitlements migrate`, see schema.py): one Users row per
user and every per-user table interleaved in it (ON DELETE CASCADE), so a user's state is
one locality group.

- `load` is one query in a single-use read-only snapshot: ARRAY subqueries return the
  user row and every child table, and the household manager's subscriptions (for an
  active member) in the same snapshot. Strong by default; `max_staleness` with
  `min_version` reads bounded-stale first and falls back to a strong read when that
  snapshot is older than the version the caller must see.
- `apply` runs in `Database.run_in_transaction`: the function reads the state
  (and the processed request) with one query inside the transaction, computes, and
  buffers mutations; it has no other effects, since the client re-runs it after ABORTED.
  Every mutation is a keyed blind write (the child tables' rows replaced, the request row
  and the history rows keyed by (user, version, index)), so a re-run or a re-sent commit
  writes the same rows and never a duplicate. Exceptions from `mutate` roll the
  transaction back and propagate unchanged.
- Every write that stores a user's state publishes its changes (storage.feed) to the
  UserChanges table in the same transaction, with the commit timestamp; `read_changes`
  reads them back with strong reads of key ranges, exactly in commit order (changes.py).
- Every call runs within the RPC's remaining budget (service.domain.deadlines), or within
  `default_timeout` when the RPC set none, the client's own retries and session
  creation included: with Spanner unreachable a call fails (StoreUnavailable, or
  DeadlineExceeded when the RPC's deadline ran out) within its budget, and its thread
  is free again; see client.py for how the budget reaches every Spanner RPC.
- A statement the database rejects (InvalidArgument) makes the repository check the
  schema again: a database that lost it (recreated, restored) is SchemaNotReady
  (UNAVAILABLE, health NOT_SERVING) until `migrate`, with no restart.
- Requests carry request tags ("load", "history", "apply-grant-read"...) and
  transactions transaction tags ("apply-grant"...), so Spanner's query
  and lock statistics show which RPC family they serve.
- One client and database handle per process, created on first use (after any worker
  fork) and kept; `close()` only detaches this repository (see client.py).

Modules: repository.py (SpannerRepository), queries.py (the queries and reading their
results), mutations.py (the writes, and the transaction storage.apply writes through),
changes.py (the change feed), codec.py (Spanner's names and values for the rows of
storage.rows), client.py (handles, budgets, errors), schema.py (migrations and `migrate`).
Running an emulator for tests and benchmarks is in testing/, which is not part of the
installed package.
"""

from storage.spanner.client import URL_PREFIX, DatabasePath, SchemaNotReady
from storage.spanner.queries import (
    APPLY_READ_QUERY,
    LOAD_QUERY,
    SUBSCRIPTION_COLUMNS,
    Query,
)
from storage.spanner.repository import SpannerRepository
from storage.spanner.schema import migrate

__all__ = [
    "APPLY_READ_QUERY",
    "LOAD_QUERY",
    "SUBSCRIPTION_COLUMNS",
    "URL_PREFIX",
    "DatabasePath",
    "Query",
    "SchemaNotReady",
    "SpannerRepository",
    "migrate",
]
