"""Benchmark users and credentials, shared by the micro benchmarks, the load tool and the
floor server.

Users are copies of the demo accounts (service.catalog.demo: free, trial, active, grace,
canceled, lapsed, on hold, family manager and member, student, promotional grant), one
copy per *block*: block b holds `u<b>-free`, `u<b>-trial`, ... and its family member
belongs to its own family manager. So any number of distinct, realistic users can be
made, and every block has the same mix of situations.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from service.catalog import load_catalog
from service.catalog.demo import DEMO_PREFIX, DEMO_USER_IDS
from service.cli.store_commands import write_demo
from service.domain.account import AccountState, UserState
from service.grpc_api.auth import Role, credentials_yaml
from storage.memory import MemoryRepository
from storage.repository import AccountRepository, IdempotencyKey, Mutation

# Fixed, benchmark-only tokens: the servers under test run on loopback and die with the run.
SERVICE_TOKEN = "bench-service-token-0123456789"
ADMIN_TOKEN = "bench-admin-token-0123456789"
SITUATIONS = tuple(user_id.removeprefix(DEMO_PREFIX) for user_id in DEMO_USER_IDS)


def user_id(block: int, situation: str) -> str:
    return f"u{block:05d}-{situation}"


def demo_accounts(now: datetime) -> list[AccountState]:
    """The demo users' states as seeding them at `now` leaves them (service.catalog.demo:
    through the write use cases, here into a store of this process)."""
    repository = MemoryRepository()
    write_demo(repository, load_catalog(), now)
    return [repository.load(user_id).account for user_id in DEMO_USER_IDS]


def block_accounts(block: int, now: datetime) -> list[AccountState]:
    """The demo accounts as block `block`'s users (household links kept inside it)."""

    def rename(demo_id: str) -> str:
        return user_id(block, demo_id.removeprefix(DEMO_PREFIX))

    accounts = []
    for account in demo_accounts(now):
        memberships = tuple(
            dataclasses.replace(
                m,
                household_id=f"{m.household_id}-{block}",
                manager_user_id=rename(m.manager_user_id),
                member_user_id=m.member_user_id and rename(m.member_user_id),
            )
            for m in account.memberships
        )
        accounts.append(
            dataclasses.replace(account, user_id=rename(account.user_id), memberships=memberships)
        )
    return accounts


def bench_accounts(blocks: int, now: datetime) -> Iterator[AccountState]:
    for block in range(blocks):
        yield from block_accounts(block, now)


def blocks_for(users: int) -> int:
    """The number of blocks holding at least `users` distinct users."""
    return -(-users // len(SITUATIONS))


def bench_user_ids(users: int) -> list[str]:
    """`users` distinct user ids, whole blocks first (so every situation is represented)."""
    ids = [user_id(b, s) for b in range(blocks_for(users)) for s in SITUATIONS]
    return ids[:users]


def seed(repository: AccountRepository, users: int, now: datetime) -> int:
    """Writes at least `users` benchmark users (whole blocks), each with one write that
    stores its state (under a fresh request id, without history); returns how many."""
    count = 0
    for account in bench_accounts(blocks_for(users), now):

        def replace(_current: AccountState, account: AccountState = account) -> Mutation:
            return Mutation(account, {})

        key = IdempotencyKey("bench_seed", uuid.uuid4().hex, "bench_seed")
        repository.apply(account.user_id, key, replace, datetime.now(UTC))
        count += 1
    return count


def user_states(blocks: int, now: datetime) -> dict[str, UserState]:
    """The users of `blocks` blocks as the store loads them (with their household)."""
    from storage.memory import MemoryRepository

    repository = MemoryRepository()
    seed(repository, blocks * len(SITUATIONS), now)
    return {uid: repository.load(uid) for uid in bench_user_ids(blocks * len(SITUATIONS))}


def write_credentials(path: Path) -> Path:
    """A credentials file knowing SERVICE_TOKEN (role service) and ADMIN_TOKEN (admin)."""
    path.write_text(
        credentials_yaml(
            [
                ("bench-admin", Role.ADMIN, ADMIN_TOKEN),
                ("bench-service", Role.SERVICE, SERVICE_TOKEN),
            ],
            header="Benchmark credentials (loopback only).",
        )
    )
    return path
