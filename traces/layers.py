"""The channel layers, with two fixes for a long-running server.

- ``InMemoryChannelLayer`` (the embedded defaults) sweeps expiry at most once a second.
- ``RedisChannelLayer`` forgets the messages that reach a closed socket's channel.
"""

from __future__ import annotations

import time

from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer
from channels_redis.core import RedisChannelLayer as ChannelsRedisChannelLayer


class InMemoryChannelLayer(ChannelsInMemoryChannelLayer):
    """Channels' in-memory layer, sweeping expired messages and memberships at most once a second.

    The stock layer walks every channel and every group membership on each ``receive`` and
    ``group_send``, so each live event cost time in proportion to the open sockets. Messages and
    memberships now expire within a second of their expiry instead of exactly at it.
    """

    SWEEP_INTERVAL = 1.0
    _swept = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._swept < self.SWEEP_INTERVAL:
            return
        self._swept = now
        super()._clean_expired()

    def forget_channel(self, channel: str) -> None:
        """The consumer of ``channel`` has ended (its leftover messages expire on their own)."""


class _ReceiveBuffers(dict):
    """channels-redis's per-channel receive buffers, refusing to keep one for a closed channel.

    channels-redis reads all of a process's messages from one Redis list and files each under its
    channel in a buffer. A message for a socket that has just closed (an event published before
    its groups were left) is filed under a channel nobody will read again, and stays: about 30 KiB
    per reconnect in the soak. Closed channels are remembered for ``REMEMBER_SECONDS``, far longer
    than a message lives in Redis (the layer's expiry), and their messages are dropped.
    """

    REMEMBER_SECONDS = 600.0

    def __init__(self, factory) -> None:
        super().__init__()
        self.factory = factory
        self.closed: dict[str, float] = {}  # channel -> when it closed, oldest first

    def __missing__(self, channel: str):
        queue = self.factory()
        if channel not in self.closed:
            self[channel] = queue
        return queue  # a closed channel's message goes into a queue that is thrown away

    def __delitem__(self, channel: str) -> None:
        # channels-redis deletes a channel's buffer when a receive on it ends, and when one is
        # cancelled. A consumer that is cancelled itself can close its channel before its
        # receive task has finished being cancelled: that buffer is gone already, and a
        # KeyError there would replace the CancelledError and skip releasing the receive lock.
        self.pop(channel, None)

    def close(self, channel: str) -> None:
        self.pop(channel, None)
        now = time.monotonic()
        self.closed[channel] = now
        for name, at in list(self.closed.items()):  # insertion order: oldest first
            if now - at < self.REMEMBER_SECONDS:
                break
            del self.closed[name]


class RedisChannelLayer(ChannelsRedisChannelLayer):
    """channels-redis, without the receive buffers of closed sockets' channels."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.receive_buffer = _ReceiveBuffers(self.receive_buffer.default_factory)

    def forget_channel(self, channel: str) -> None:
        """The consumer of ``channel`` has ended: drop what is buffered for it and what comes later."""
        self.receive_buffer.close(channel)
