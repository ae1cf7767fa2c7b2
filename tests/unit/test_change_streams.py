"""ChangeStreams (WatchChanges' use case) on its own: a fake follower publishes batches at
positions it chooses; streams are read on a real event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from service.domain.errors import ChangeStreamsClosed, InvalidRequest, TooManyChangeStreams
from service.usecases.change_streams import (
    MAX_CHANGES_PER_MESSAGE,
    ChangeMessage,
    ChangeStreams,
    UserChange,
)
from service.usecases.tokens import issue_token
from storage.feed import Change, ChangeBatch


class Follower:
    def __init__(self) -> None:
        self.position: str | None = "p0"
        self.lost = False
        self.seq = 0

    def streams(self, **kwargs: float) -> ChangeStreams:
        return ChangeStreams(
            2,
            feed_position=lambda: self.position,
            feed_lost=lambda: self.lost,
            **kwargs,  # type: ignore[arg-type]
        )

    def publish(self, hub: ChangeStreams, *changes: Change) -> str:
        self.seq += 1
        self.position = f"p{self.seq}"
        hub.publish(changes)
        return self.position


async def next_of(stream: AsyncGenerator[ChangeMessage, None], seconds: float = 5) -> ChangeMessage:
    async with asyncio.timeout(seconds):
        return await anext(stream)


def test_first_message_at_once_then_each_change_once_with_its_token() -> None:
    async def scenario() -> None:
        follower = Follower()
        hub = follower.streams()
        stream = hub.stream()
        first = await next_of(stream)
        assert first == ChangeMessage(False, (), "p0")
        follower.publish(hub, Change("u1", 3))
        message = await next_of(stream)
        assert message == ChangeMessage(False, (UserChange("u1", 3, issue_token("u1", 3)),), "p1")
        await stream.aclose()
        assert hub.open_streams == 0

    asyncio.run(scenario())


def test_a_slow_stream_gets_everything_since_its_last_message_coalesced() -> None:
    async def scenario() -> None:
        follower = Follower()
        hub = follower.streams()
        stream = hub.stream()
        await next_of(stream)
        follower.publish(hub, Change("u1", 1), Change("u2", 1))
        follower.publish(hub, Change("u1", 2))
        follower.publish(hub, Change("u3", None), Change("u2", 5))
        message = await next_of(stream)
        assert not message.reset
        assert [(c.user_id, c.version) for c in message.changes] == [
            ("u1", 2),
            ("u3", 0),
            ("u2", 5),
        ]
        assert message.changes[1].token == ""
        assert message.position == "p3"

    asyncio.run(scenario())


def test_resume_from_a_known_position_replays_what_followed_and_else_resets() -> None:
    async def scenario() -> None:
        follower = Follower()
        hub = follower.streams()
        at_1 = follower.publish(hub, Change("u1", 1))
        follower.publish(hub, Change("u2", 1))
        resumed = hub.stream(at_1)
        message = await next_of(resumed)
        assert (message.reset, [c.user_id for c in message.changes]) == (False, ["u2"])
        assert message.position == "p2"
        await resumed.aclose()

        current = hub.stream("p2")
        assert await next_of(current) == ChangeMessage(False, (), "p2")
        await current.aclose()

        unknown = hub.stream("position-of-another-server")
        message = await next_of(unknown)
        assert message == ChangeMessage(True, (), "p2")
        await unknown.aclose()

    asyncio.run(scenario())


def test_a_position_out_of_the_log_resets() -> None:
    async def scenario() -> None:
        follower = Follower()
        hub = follower.streams(log_changes=3)
        old = follower.publish(hub, Change("u1", 1))
        for index in range(5):
            follower.publish(hub, Change(f"v{index}", 1))
        stream = hub.stream(old)
        message = await next_of(stream)
        assert message.reset

    asyncio.run(scenario())


def test_a_gap_resets_and_a_lost_feed_stops_heartbeats_without_reset() -> None:
    async def scenario() -> None:
        follower = Follower()
        hub = follower.streams(heartbeat_seconds=0.05)
        stream = hub.stream()
        await next_of(stream)
        assert await next_of(stream) == ChangeMessage(False, (), "p0")  # a heartbeat
        follower.lost = True
        hub.publish(None)  # the follower telling that it lost the feed
        pending = asyncio.ensure_future(anext(stream))
        done, _ = await asyncio.wait({pending}, timeout=0.3)
        assert not done  # no heartbeat while the feed is lost, and no reset
        follower.lost = False
        follower.publish(hub, Change("u1", 2))  # caught up
        async with asyncio.timeout(5):
            message = await pending
        assert (message.reset, [c.user_id for c in message.changes]) == (False, ["u1"])
        follower.position = "p-after-gap"
        hub.publish(None)  # a gap
        follower.publish(hub, Change("u2", 1))
        message = await next_of(stream)
        assert message.reset
        assert [c.user_id for c in message.changes] == ["u2"]

    asyncio.run(scenario())


def test_big_batches_are_split_and_only_the_last_part_has_the_position() -> None:
    async def scenario() -> None:
        follower = Follower()
        hub = follower.streams()
        stream = hub.stream()
        await next_of(stream)
        count = MAX_CHANGES_PER_MESSAGE + 5
        follower.publish(hub, *(Change(f"u{i}", 1) for i in range(count)))
        first, second = await next_of(stream), await next_of(stream)
        assert (len(first.changes), first.position) == (MAX_CHANGES_PER_MESSAGE, "")
        assert (len(second.changes), second.position) == (5, follower.position)

    asyncio.run(scenario())


def test_streams_are_bounded_closed_and_positions_checked() -> None:
    async def scenario() -> None:
        follower = Follower()
        hub = follower.streams()
        one, two = hub.stream(), hub.stream()
        await next_of(one)
        await next_of(two)
        with pytest.raises(TooManyChangeStreams):
            await next_of(hub.stream())
        with pytest.raises(InvalidRequest):
            await next_of(hub.stream("x" * 300))
        hub.close()
        with pytest.raises(ChangeStreamsClosed):
            await next_of(one)
        with pytest.raises(ChangeStreamsClosed):
            await next_of(hub.stream())

    asyncio.run(scenario())


def test_no_feed_no_stream() -> None:
    async def scenario() -> None:
        hub = ChangeStreams(2, feed_position=lambda: None, feed_lost=lambda: True)
        with pytest.raises(ChangeStreamsClosed):
            await next_of(hub.stream())

    asyncio.run(scenario())


def test_an_unknown_position_is_caught_up_from_the_feed_then_the_log() -> None:
    async def scenario() -> None:
        follower = Follower()
        asked: list[str] = []

        async def catch_up(after: str) -> ChangeBatch:
            asked.append(after)
            if after == "unreadable":
                raise RuntimeError("the feed cannot parse it")
            if after == "far-ahead":
                return ChangeBatch((), "a-position-the-log-never-reaches")
            return ChangeBatch((Change("u9", 4), Change("u1", 1)), "p1")

        hub = ChangeStreams(
            4,
            feed_position=lambda: follower.position,
            feed_lost=lambda: follower.lost,
            catch_up=catch_up,
        )
        follower.publish(hub, Change("u1", 1))  # p1
        follower.publish(hub, Change("u2", 2))  # p2
        resumed = hub.stream("another-workers-position")
        message = await next_of(resumed)
        assert not message.reset
        assert [(c.user_id, c.version) for c in message.changes] == [
            ("u9", 4),
            ("u1", 1),
            ("u2", 2),
        ]
        assert message.position == "p2"
        for position in ("unreadable", "far-ahead"):
            failed = await next_of(hub.stream(position))
            assert failed.reset
        assert asked == ["another-workers-position", "unreadable", "far-ahead"]
        assert (hub.caught_up, hub.catch_up_failed) == (1, 2)

    asyncio.run(scenario())
