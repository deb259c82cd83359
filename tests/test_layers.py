"""The channel layers' fixes for long-running servers, against a real Redis."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.redis


async def test_the_redis_layer_keeps_nothing_for_a_closed_channel(redis_url):
    from tracesite.env import redis_hosts
    from traces.layers import RedisChannelLayer

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
