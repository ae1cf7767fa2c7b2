"""Listing and replaying dead letters (`entitlements dead-letters`, `entitlements
replay-dead-letters`): a letter's stored notification is mapped again with the current
catalog and mapping, and recorded; one that now records (or has nothing to record) is
resolved, one still unmappable stays with its new reason."""

from __future__ import annotations

import asyncio

from service.bootstrap import build_application
from service.config import Settings
from service.domain.app_store_mapping import map_app_store
from service.domain.play_mapping import map_play
from service.domain.stripe_mapping import map_stripe
from service.ingestion.runner import build_ingestion
from service.usecases.ingestion import IngestResult, Mapper
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

        async def replay_all() -> list[tuple[DeadLetter, IngestResult]]:
            results = []
            for letter in letters:
                mapper = MAPPERS.get(letter.source)
                if mapper is None:
                    continue
                results.append((letter, await ingestion.replay(letter, mapper)))
            return results

        return asyncio.run(replay_all())
    finally:
        app.close()
