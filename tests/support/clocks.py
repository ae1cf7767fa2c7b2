"""A clock for the server's use cases (service.usecases.clock.Clock) that a test moves,
instead of sleeping until real time has passed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class MovingClock:
    """Reads `now`; `advance` moves it forward. Starts at the real time unless told."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by
