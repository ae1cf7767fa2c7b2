"""The commands that open the store (or serve it): serve, migrate, seed-demo; and the
settings reference."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
from datetime import UTC, datetime

from service.catalog import load_catalog
from service.catalog.demo import (
    DEMO_USER_IDS,
    DEMO_USERS,
    DemoEvent,
    DemoGrant,
    DemoHousehold,
    DemoWrite,
    demo_writes,
)
from service.cli.preflight import check_serving_configuration, workers_for_the_store
from service.cli.settings_flags import setting_overrides, settings_reference
from service.config import ENV_PREFIX, Settings, unknown_environment_variables
from service.domain.catalog import Catalog
from service.grpc_api.audit import configure_audit_logging
from service.grpc_api.auth import ensure_dev_credentials
from service.grpc_api.logs import configure_logging
from service.usecases.cache import UserStateCache
from service.usecases.store_calls import StoreCalls
from service.usecases.writes import (
    AddHouseholdMember,
    CreateHousehold,
    GrantEntitlement,
    RecordStudentVerification,
    RecordSubscriptionEvent,
    WriteService,
)
from storage.repository import AccountRepository
from storage.urls import migrate as migrate_storage
from storage.urls import open_repository

log = logging.getLogger(__name__)


def serve(args: argparse.Namespace) -> int:
    from service.grpc_api import workers

    settings = Settings.load(**setting_overrides(args))
    configure_logging(settings.log_format)
    warn_unknown_environment()
    if settings.credentials_file is None:
        settings = _bootstrap_dev_credentials(settings)
    # Once, here, before any worker is forked: a configuration error is one `error:` line.
    check_serving_configuration(settings)
    settings, note = workers_for_the_store(settings)
    configure_audit_logging(settings.audit_log_file)

    def announce(message: str) -> None:
        print(f"entitlements: {message}", flush=True)

    if note is not None:
        announce(note)

    return workers.serve(settings, announce)


def _bootstrap_dev_credentials(settings: Settings) -> Settings:
    """No credentials_file configured: use (and the first time generate) development
    credentials in the data folder, so that `make run` and the CLI work out of the box."""
    dev = ensure_dev_credentials(settings.data_dir)
    tokens_file, credentials_file = dev.tokens_file.absolute(), dev.credentials_file.absolute()
    if dev.created:
        # Where the tokens are, never the tokens: this output is the server's log.
        print(
            "entitlements: no credentials_file configured; generated development credentials: "
            f"an admin token (write RPCs) and a service token (read RPCs) in {tokens_file} "
            f"(mode 0600; the CLI reads them from there), digests in {credentials_file}",
            flush=True,
        )
    else:
        print(
            f"entitlements: using the development credentials of {credentials_file} "
            f"(tokens in {tokens_file})",
            flush=True,
        )
    if settings.host not in {"127.0.0.1", "localhost", "::1"}:
        print(
            f"entitlements: warning: development credentials on {settings.host}; set "
            f"{ENV_PREFIX}CREDENTIALS_FILE for anything but local development",
            flush=True,
        )
    return dataclasses.replace(settings, credentials_file=dev.credentials_file)


def migrate(args: argparse.Namespace) -> int:
    settings = Settings.load(storage_url=args.storage)
    warn_unknown_environment()
    applied = migrate_storage(settings.storage_url)
    if applied is None:
        print(f"{settings.storage_url}: schema up to date (this store migrates itself on open)")
    elif applied:
        print(f"{settings.storage_url}: applied {', '.join(applied)}")
    else:
        print(f"{settings.storage_url}: schema up to date, nothing to apply")
    return 0


def seed_demo(args: argparse.Namespace) -> int:
    """Writes the demo users through the write use cases, into a store that does not hold
    them yet (or again, as of now, with --reseed)."""
    settings = Settings.load(storage_url=args.storage)
    warn_unknown_environment()
    repository = open_repository(settings.storage_url, create=True)
    try:
        present = [u for u in DEMO_USER_IDS if repository.load(u).account.version > 0]
        if present and not args.reseed:
            print(
                f"{settings.storage_url} holds the demo users already "
                f"({len(present)} of {len(DEMO_USER_IDS)}): nothing written "
                "(`seed-demo --reseed` writes them again, as of now)"
            )
            return 0
        now = datetime.now(UTC)
        # A store holding some of them already gets new events and requests, not replays.
        run = now.strftime("%Y%m%dT%H%M%S") if present else ""
        write_demo(repository, load_catalog(settings.catalog_path), now, run=run)
    finally:
        repository.close()
    verb = "seeded again" if present else "seeded"
    print(f"{verb} {len(DEMO_USERS)} demo users into {settings.storage_url}:")
    width = max(len(user.user_id) for user in DEMO_USERS)
    for user in DEMO_USERS:
        print(f"  {user.user_id:<{width}}  {user.situation}")
    return 0


def write_demo(
    repository: AccountRepository, catalog: Catalog, now: datetime, *, run: str = ""
) -> list[str]:
    """The demo users (service.catalog.demo) written into `repository` through the write
    use cases, with their clock at `now` (see demo_writes for `run`); their user ids.
    Tests and benchmarks seed the demo with it too."""
    store = StoreCalls(threads=1)
    try:
        cache = UserStateCache(max_entries=len(DEMO_USER_IDS), ttl_seconds=1.0)
        # Generous: seeding is no RPC with a deadline, and the store may be busy.
        writes = WriteService(catalog, repository, cache, lambda: now, 30.0, store)
        asyncio.run(_run_demo(writes, demo_writes(now, run=run)))
    finally:
        store.close()
    return list(DEMO_USER_IDS)


async def _run_demo(writes: WriteService, demo: list[DemoWrite]) -> None:
    for write in demo:
        if isinstance(write, DemoEvent):
            await writes.events.record(RecordSubscriptionEvent(write.user_id, write.event))
        elif isinstance(write, DemoGrant):
            await writes.grants.grant(
                GrantEntitlement(write.request_id, write.user_id, write.grant)
            )
        elif isinstance(write, DemoHousehold):
            manager = write.manager_user_id
            created = await writes.households.create(CreateHousehold(write.request_id, manager))
            member = AddHouseholdMember(
                write.member_request_id, manager, created.household_id, write.member_user_id
            )
            await writes.households.add_member(member)
        else:
            await writes.students.record(
                RecordStudentVerification(
                    write.request_id,
                    write.user_id,
                    write.verified_until,
                    write.provider_reference,
                )
            )


def show_settings_reference(args: argparse.Namespace) -> int:
    print(settings_reference(), end="")
    return 0


def warn_unknown_environment() -> None:
    """A warning line per ENTITLEMENTS_* variable that names no setting: a misspelled
    setting would otherwise be silently ignored."""
    for name, closest in unknown_environment_variables():
        hint = f"; did you mean {closest}?" if closest else ""
        log.warning("unknown environment variable %s ignored%s", name, hint)
