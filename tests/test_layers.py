"""The channel layers' fixes for long-running servers, against a real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest

pytestmark = pytest.mark.redis


async def test_the_redis_layer_keeps_nothing_for_a_closed_channel(redis_url):
    from traces.compat import RedisChannelLayer
    from tracesite.env import redis_hosts

    layer = RedisChannelLayer(hosts=redis_hosts(redis_url), prefix=f"test{uuid.uuid4().hex[:8]}", expiry=60)
    closed = await layer.new_channel()
    still_open = await layer.new_channel()
    reader = await layer.new_channel()
    layer.forget_channel(closed)  # its consumer ended
    for channel in (closed, still_open, reader):
        await layer.send(channel, {"type": "trace.event", "to": channel})
    # Reading one channel files the process's other messages under their channels.
    assert (await layer.receive(reader))["to"] == reader
    assert closed not in layer.receive_buffer  # dropped: nobody will read it
    assert (await layer.receive(still_open))["to"] == still_open  # the others are kept as before
    await layer.flush()
    await layer.close_pools()


async def test_a_receive_cancelled_after_its_socket_closed_ends_as_cancelled_and_frees_the_layer(redis_url):
    """A consumer cancelled by the server can close its channel before its receive task has
    finished being cancelled. That receive must still end as cancelled, not as a KeyError that
    a retry loop would take for a layer error, and leave the receive lock to the others."""
    from traces.compat import RedisChannelLayer
    from tracesite.env import redis_hosts

    layer = RedisChannelLayer(hosts=redis_hosts(redis_url), prefix=f"test{uuid.uuid4().hex[:8]}", expiry=60)
    holder, closing, later = [await layer.new_channel() for _ in range(3)]
    reading = asyncio.create_task(layer.receive(holder))  # takes the receive lock and reads Redis
    await asyncio.sleep(0.1)
    waiting = asyncio.create_task(layer.receive(closing))  # waits for the lock or for its buffer
    await asyncio.sleep(0.1)
    waiting.cancel()
    layer.forget_channel(closing)
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await layer.send(holder, {"type": "trace.event", "to": holder})
    assert (await asyncio.wait_for(reading, 10))["to"] == holder
    assert layer.receive_count == 0 and layer.receive_lock is None  # nobody is left holding it
    await layer.send(later, {"type": "trace.event", "to": later})
    assert (await asyncio.wait_for(layer.receive(later), 10))["to"] == later
    await layer.flush()
    await layer.close_pools()


async def test_a_cancelled_layer_call_ends_as_cancelled_even_when_redis_py_returns(redis_url):
    """redis-py sometimes returns normally from a call whose task was cancelled. A loop that
    publishes or receives through the layer must still end when cancelled, every time."""
    from traces.compat import RedisChannelLayer
    from traces.live.layer import BestEffortLayer
    from tracesite.env import redis_hosts

    layer = BestEffortLayer(layer=RedisChannelLayer(hosts=redis_hosts(redis_url), prefix=f"test{uuid.uuid4().hex[:8]}"))
    member = await layer.new_channel()
    await layer.group_add("processes", member)

    async def publishing() -> None:
        while True:
            await layer.group_send("processes", {"type": "trace.batch"})

    async def receiving() -> None:
        while True:
            await layer.receive(member)

    for attempt in range(200):  # cancelled at many points of a call's round trips
        tasks = [asyncio.create_task(publishing()), asyncio.create_task(receiving())]
        await asyncio.sleep(0.0003 * (attempt % 12))
        for task in tasks:
            task.cancel()
        done, pending = await asyncio.wait(tasks, timeout=5)
        assert not pending, f"attempt {attempt}: a cancelled loop kept running"
        assert all(task.cancelled() for task in done), [task.exception() for task in done if not task.cancelled()]
    await layer.layer.flush()
    await layer.layer.close_pools()
