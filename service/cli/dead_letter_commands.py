"""dead-letters and replay-dead-letters: the store notifications that could not become
events (docs/INGESTION.md), listed, and replayed after a fix; reconcile-play: a user's Play
purchases read again from the Play Developer API."""

from __future__ import annotations

import argparse

from service.config import Settings


def dead_letters(args: argparse.Namespace) -> int:
    from service.ingestion.replay import list_dead_letters

    settings = Settings.load(storage_url=args.storage)
    letters = list_dead_letters(settings, args.all, args.limit)
    if not letters:
        print("no dead letters" if args.all else "no open dead letters")
        return 0
    for letter in letters:
        state = f"resolved {letter.resolved_at.isoformat()}" if letter.resolved_at else "open"
        print(
            f"{letter.source} {letter.delivery_id}  {letter.reason}: {letter.detail}  "
            f"(received {letter.received_at.isoformat()}, {letter.attempts} attempt(s), {state})"
        )
    return 0


def replay_dead_letters(args: argparse.Namespace) -> int:
    from service.ingestion.replay import replay_dead_letters as replay

    settings = Settings.load(storage_url=args.storage)
    results = replay(settings, list(args.delivery_ids))
    if not results:
        print("nothing to replay")
        return 0
    failed = 0
    for letter, result in results:
        print(f"{letter.source} {letter.delivery_id}: {result.verdict.value} {result.detail}")
        failed += result.verdict.value in ("dead_letter", "retry", "conflict")
    return 1 if failed else 0


def reconcile_play(args: argparse.Namespace) -> int:
    from service.ingestion.play import PlayApiUnavailable
    from service.ingestion.reconcile import failed
    from service.ingestion.reconcile import reconcile_play as reconcile

    settings = Settings.load(storage_url=args.storage)
    if not settings.play_package_name:
        print("error: set ENTITLEMENTS_PLAY_PACKAGE_NAME (the app's package name)")
        return 2
    try:
        outcomes = reconcile(settings, args.user_id, list(args.tokens))
    except PlayApiUnavailable as error:
        print(f"error: the Play Developer API: {error}")
        return 1
    for token, outcome in outcomes:
        print(f"{token[:24]}...: {outcome}")
    return 1 if any(failed(outcome) for _, outcome in outcomes) else 0


def reconcile_app_store(args: argparse.Namespace) -> int:
    from service.ingestion.app_store_api import AppStoreApiUnavailable
    from service.ingestion.errors import VerificationUnavailable
    from service.ingestion.reconcile import failed
    from service.ingestion.reconcile import reconcile_app_store as reconcile

    settings = Settings.load(storage_url=args.storage)
    try:
        outcomes = reconcile(settings, args.user_id, list(args.original_transaction_ids))
    except ValueError as error:
        print(f"error: {error}")
        return 2
    except (AppStoreApiUnavailable, VerificationUnavailable) as error:
        print(f"error: the App Store Server API: {error}")
        return 1
    for original, outcome in outcomes:
        print(f"{original}: {outcome}")
    return 1 if any(failed(outcome) for _, outcome in outcomes) else 0


def link_store_account(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from service.domain.store_accounts import LINKABLE_STORES
    from storage.urls import open_account_links

    if args.store not in LINKABLE_STORES:
        print(f"error: STORE must be one of {', '.join(LINKABLE_STORES)}")
        return 2
    settings = Settings.load(storage_url=args.storage)
    links = open_account_links(settings.storage_url)
    try:
        links.link(args.store, args.account_id, args.user_id, datetime.now(UTC))
    finally:
        links.close()
    print(f"{args.store} account {args.account_id} is {args.user_id}'s")
    return 0
