"""The process's live hub: which of *this process's* sockets follow which trace, session and the
all-traces feed, and the hand-over of stored events to them.

The event store (``traces.store.event_store``) calls ``deliver()`` with each committed batch (and
the bus with batches other processes committed). For every event it puts the stored text on the
outbox of each socket that follows its trace or its session (once, however it follows it), and
boundary events on the outboxes of the feed's sockets. That is the whole live hop: no channel-layer message and no
consumer dispatch per event and socket; each socket's own writer sends what its outbox holds.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Protocol

from traces.live import delivery
from traces.store.event_store import StoredEvent


class Follower(Protocol):
    """A socket's side of delivery (``traces.live.delivery.Outbox``)."""

    def offer(self, event: StoredEvent) -> None: ...

    def offer_feed(self, event: StoredEvent) -> None: ...

    def catch_up(self) -> None: ...


NOBODY: frozenset[Follower] = frozenset()


class Hub:
    def __init__(self) -> None:
        self.traces: dict[str, set[Follower]] = defaultdict(set)
        self.sessions: dict[str, set[Follower]] = defaultdict(set)
        self.feed: set[Follower] = set()
        self._ticker: asyncio.Task | None = None

    # ------------------------------------------------------------------ who follows what

    def follow_trace(self, trace_id: str, follower: Follower) -> None:
        self.traces[trace_id].add(follower)
        self._tick()

    def unfollow_trace(self, trace_id: str, follower: Follower) -> None:
        _discard(self.traces, trace_id, follower)

    def join_session(self, group: str, follower: Follower) -> None:
        self.sessions[group].add(follower)
        self._tick()

    def join_feed(self, follower: Follower) -> None:
        self.feed.add(follower)

    def remove(self, follower: Follower) -> None:
        """A socket closed: it follows nothing any more."""
        for index in (self.traces, self.sessions):
            for key in [key for key, members in index.items() if follower in members]:
                _discard(index, key, follower)
        self.feed.discard(follower)

    @property
    def followers(self) -> set[Follower]:
        everyone = set(self.feed)
        for members in (*self.traces.values(), *self.sessions.values()):
            everyone |= members
        return everyone

    # ------------------------------------------------------------------ delivery

    def deliver(self, events: list[StoredEvent]) -> None:
        """Hand a batch of stored events, in seq order per trace, to the sockets that follow them."""
        traces, sessions, feed = self.traces, self.sessions, self.feed
        for event in events:
            by_trace = traces.get(event.trace_id) or NOBODY
            by_session = sessions.get(event.session_group) or NOBODY
            targets = by_trace | by_session if by_trace and by_session else by_trace or by_session
            for follower in targets:
                follower.offer(event)
            if event.boundary and feed:
                for follower in feed:
                    if follower not in targets:
                        follower.offer_feed(event)

    def _tick(self) -> None:
        """Start the catch-up ticker (it runs from the first follower until ``aclose``): every
        ``delivery.CATCH_UP_SECONDS`` each socket checks its quiet traces."""
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._catch_up_loop(), name="hub-catch-up")

    async def _catch_up_loop(self) -> None:
        while True:
            await asyncio.sleep(delivery.CATCH_UP_SECONDS)
            for follower in self.followers:
                follower.catch_up()

    async def aclose(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None


def _discard(index: dict[str, set[Follower]], key: str, follower: Follower) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(follower)
        if not members:
            del index[key]
