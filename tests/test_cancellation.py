"""The live service's background loops end when they are cancelled, even when the channel layer
turns the cancellation into another error (channels-redis 4.3 raised KeyError from a receive
whose buffer was already gone). A loop that retried on that error would never end, and a server
shutdown, or a test's event loop, would wait for it for ever."""

from __future__ import annotations

import asyncio

import pytest

from agents.events import EventType
from traces.access import SessionKey
from traces.compat import InMemoryChannelLayer
from traces.live.bus import GROUP, Bus
from traces.live.hub import Hub
from traces.store.recorder import EventStore, TraceRecorder


class CancelAsKeyError(InMemoryChannelLayer):
    """Blocks in receive and group_send until cancelled, and raises KeyError for the first cancel."""

    crosses_processes = True  # as Redis: the bus uses it

    def __init__(self) -> None:
        super().__init__()
        self.blocked = asyncio.Event()
        self.converted = False

    async def _block(self, channel: str):
        self.blocked.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if self.converted:
                raise  # only the first: a loop that swallowed it fails the test instead of hanging it
            self.converted = True
            raise KeyError(channel) from None

    async def receive(self, channel):
        return await self._block(channel)

    async def group_send(self, group, message):
        await self._block(group)


async def ended_within(task: asyncio.Task, seconds: float) -> bool:
    await asyncio.wait([task], timeout=seconds)
    if task.done():
        return True
    task.cancel()  # it swallowed the cancellation: end it now, so that the test fails and does not hang
    await asyncio.wait([task], timeout=seconds)
    return False


async def test_the_bus_listener_ends_when_cancelled():
    layer = CancelAsKeyError()
    bus = Bus(Hub(), layer)
    await bus.start()
    await asyncio.wait_for(layer.blocked.wait(), 5)
    closing = asyncio.create_task(bus.aclose())
    assert await ended_within(closing, 5)
    assert not layer.groups.get(GROUP)  # it left the processes' group


@pytest.mark.django_db(transaction=True)
async def test_the_event_store_closes_while_a_publish_is_stuck():
    layer = CancelAsKeyError()
    store = EventStore(hub=Hub(), bus=Bus(Hub(), layer))
    recorder = TraceRecorder(session=SessionKey("cancel-publisher"), store=store)
    await recorder.emit(
        EventType.TRACE_STARTED,
        {
            "trace_id": str(recorder.trace_id),
            "trace_name": "t",
            "request": "q",
            "agent_name": "a",
            "max_steps": 1,
            "metadata": {},
        },
    )
    await recorder.flush()  # stored; its publish is stuck in the layer
    await asyncio.wait_for(layer.blocked.wait(), 5)
    closing = asyncio.create_task(store.aclose())
    assert await ended_within(closing, 5)
