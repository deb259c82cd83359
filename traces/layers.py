"""The in-memory channel layer of the embedded defaults, with its expiry sweep made cheap."""

from __future__ import annotations

import time

from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer


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
