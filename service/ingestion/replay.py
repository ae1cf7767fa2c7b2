"""Listing and replaying dead letters (`entitlements dead-letters`, `entitlements
replay-dead-letters`): a letter's stored notification is mapped again with the current
catalog and mapping, and recorded; one that now records (or has nothing to record) is
resolved, one still unmappable stays with its new reason. A Stripe refund or dispute
kept for want of its invoice (missing_data) has it fetched from the Stripe API first when
stripe_api_key is set, as the ingress does."""

from __future__ import annotations

import asyncio
import dataclasses
import json

from service.bootstrap import build_application
from service.config import Settings
from service.domain.app_store_mapping import map_app_store
from service.domain.play_mapping import map_play
from service.domain.stripe_mapping import map_stripe
from service.ingestion.runner import build_ingestion
from service.ingestion.stripe_api import (
    LibraryStripeApi,
    StripeApi,
    StripeApiUnavailable,
    expand_refund,
)
from service.usecases.ingestion import IngestResult, Mapper, Verdict
from storage.dead_letters import DeadLetter
from storage.urls import open_dead_letters

MAPPERS: dict[str, Mapper] = {
    "app_store": map_app_store,
    "stripe": map_stripe,
    "google_play": map_play,
}


def list_dead_letters(settings: Settings, include_resolved: bool, limit: int) -> list[DeadLetter]:
    letters = open_dead_letters(settings.storage_url)
    try:
        return letters.list(include_resolved=include_resolved, limit=limit)
    finally:
        letters.close()


def replay_dead_letters(
    settings: Settings, delivery_ids: list[str]
) -> list[tuple[DeadLetter, IngestResult]]:
    """Replays the open letters named (all open ones when none is named)."""
    app = build_application(settings)
    try:
        ingestion = build_ingestion(settings, app)
        letters = ingestion.dead_letters.list(limit=10_000)
        if delivery_ids:
            letters = [x for x in letters if x.delivery_id in delivery_ids]

        stripe_api = (
            LibraryStripeApi(settings.stripe_api_key, settings.stripe_api_url)
            if settings.stripe_api_key
            else None
        )

        async def replay_all() -> list[tuple[DeadLetter, IngestResult]]:
            results = []
            for letter in letters:
                mapper = MAPPERS.get(letter.source)
                if mapper is None:
                    continue
                try:
                    again = await asyncio.to_thread(_expanded, letter, stripe_api)
                except StripeApiUnavailable as error:
                    results.append((letter, IngestResult(Verdict.RETRY, f"Stripe API: {error}")))
                    continue
                results.append((letter, await ingestion.replay(again, mapper)))
            return results

        return asyncio.run(replay_all())
    finally:
        app.close()


def _expanded(letter: DeadLetter, api: StripeApi | None) -> DeadLetter:
    """The letter with its Stripe refund's charge and invoice fetched where they were
    missing (the letter itself otherwise)."""
    if api is None or letter.source != "stripe":
        return letter
    event = json.loads(letter.payload)
    expanded = expand_refund(event, api)
    if expanded is event:
        return letter
    return dataclasses.replace(letter, payload=json.dumps(expanded))
