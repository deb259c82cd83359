"""Between server processes: one channel-layer message per committed batch, and cancel requests.

Every process that serves sockets or runs agents joins one channel-layer group with a channel of
its own. The process that stores a batch delivers it to its own sockets through its hub, then
sends the whole batch to the group in one message; every other process hands it to its hub. So a
batch costs one ``group_send`` however many events and sockets it has (channels-redis: a few
Redis round trips), instead of one per event and group. ``cancel_agent`` for a run in another
process travels the same way.

Best effort, like every layer call (``traces.live.layer``): a process that misses a batch (a Redis
blip, a restart) loses nothing, because its sockets catch up from the database by seq. With
the in-memory layer there is only one process, and nothing is sent.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings

from traces.access import SessionKey
from traces.live.hub import Hub
from traces.live.layer import BestEffortLayer, configured_layer
from traces.store.event_store import StoredEvent

logger = logging.getLogger(__name__)

GROUP = "tracesite.processes"
BATCH_MESSAGE = "trace.batch"
CANCEL_MESSAGE = "agent.cancel"
CLOSE_SECONDS = 2.0


class Bus:
    def __init__(self, hub: Hub, layer: Any = None, on_cancel: Callable[[SessionKey], bool] | None = None) -> None:
        self.hub = hub
        self.layer: BestEffortLayer | None = BestEffortLayer.wrap(layer) if layer is not None else configured_layer()
        self.origin = uuid.uuid4().hex  # this process: it does not deliver its own batches twice
        self.channel = ""
        self._tasks: list[asyncio.Task] = []
        self._starting: asyncio.Task | None = None
        self.on_cancel = on_cancel  # cancels a run of this process (traces.live.sessions)

    @property
    def crosses_processes(self) -> bool:
        return self.layer is not None and getattr(self.layer, "crosses_processes", False)

    async def start(self) -> None:
        """Join the processes' group and listen (idempotent; nothing to do on a single-process layer).

        Sockets call it as they connect, many at once: they all wait for one start. (Each starting
        on its own joined the group with a channel nobody read, and channels-redis kept every
        batch sent to it in this process's memory.)"""
        if not self.crosses_processes or self.layer is None:
            return
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start(), name="bus-start")
        await asyncio.shield(self._starting)  # a socket cancelled meanwhile does not cancel the start

    async def _start(self) -> None:
        assert self.layer is not None
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(GROUP, self.channel)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen(), name="bus-listen"),
            loop.create_task(self._stay_joined(), name="bus-refresh"),
        ]

    async def publish(self, events: list[StoredEvent]) -> None:
        """Send a committed batch to the other processes."""
        if not self.crosses_processes or self.layer is None or not events:
            return  # sending needs no membership: a process that only runs agents (runagent) never listens
        message = {"type": BATCH_MESSAGE, "origin": self.origin, "events": [e.as_tuple() for e in events]}
        await self.layer.group_send(GROUP, message)

    async def cancel(self, session: SessionKey) -> bool:
        """Ask whichever process runs ``session``'s agent to cancel it."""
        if not self.crosses_processes or self.layer is None:
            return False
        message = {"type": CANCEL_MESSAGE, "origin": self.origin, "session": [session.session_id, session.owner_id]}
        return await self.layer.group_send(GROUP, message)

    async def _listen(self) -> None:
        assert self.layer is not None
        while True:
            message = await self.layer.receive(self.channel)  # waits out an outage
            if message.get("origin") == self.origin:
                continue
            if message.get("type") == BATCH_MESSAGE:
                self.hub.deliver([StoredEvent(*event) for event in message.get("events") or []])
            elif message.get("type") == CANCEL_MESSAGE and self.on_cancel is not None:
                session_id, owner_id = message["session"]
                self.on_cancel(SessionKey.of(session_id, owner_id))

    async def _stay_joined(self) -> None:
        """Join again now and then: a restarted Redis has forgotten the group, and memberships expire."""
        assert self.layer is not None
        while True:
            await asyncio.sleep(settings.TRACE_GROUP_REFRESH)
            await self.layer.group_add(GROUP, self.channel)

    async def aclose(self) -> None:
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
            self._starting = None
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # channels-redis can take its time to give up a blocking read; a closing process need not wait for it.
            await asyncio.wait(self._tasks, timeout=CLOSE_SECONDS)
        self._tasks = []
        if self.layer is not None and self.channel:
            await self.layer.group_discard(GROUP, self.channel)
            self.layer.forget_channel(self.channel)
            self.channel = ""
