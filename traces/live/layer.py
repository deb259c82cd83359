"""The channel layer, best effort: one policy for it being down.

Every layer call of the process goes through ``BestEffortLayer`` (it is the configured backend
and wraps the real one): the bus (``traces.live.bus``) joining the processes' group, publishing
each stored batch and listening for the other processes' batches and cancel requests. Live
delivery is a convenience on top of the stored history, so a layer that fails (Redis restarting,
a network split) must not fail anything else: a call that raises or takes longer than
``CALL_TIMEOUT`` is logged once per outage, counted in ``/metrics`` and reported to the caller as
``False`` (``None`` for ``new_channel``). ``receive`` retries until it gets a message, so the bus
outlives the outage; sockets catch up from the database by ``seq`` meanwhile. ``/health`` asks
``check()``, which does not swallow.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from channels.layers import get_channel_layer
from django.utils.module_loading import import_string

from traces.loops import keep_cancellation, raise_if_cancelled
from traces.metrics import LAYER_ERRORS, LAYER_UP

logger = logging.getLogger(__name__)

CALL_TIMEOUT = 5.0  # seconds: a layer that hangs is a layer that is down
RECEIVE_RETRY = (0.1, 0.5, 1.0, 2.0)  # seconds between receive attempts while it fails, then the last again


class BestEffortLayer:
    """Wraps a channel layer; see the module docstring. Anything else is the wrapped layer's."""

    def __init__(self, backend: str | None = None, config: dict[str, Any] | None = None, layer: Any = None) -> None:
        self.layer = layer if layer is not None else import_string(backend or "")(**(config or {}))
        self.up = True
        LAYER_UP.set(1)

    @classmethod
    def wrap(cls, layer: Any) -> BestEffortLayer | None:
        if layer is None or isinstance(layer, cls):
            return layer
        return cls(layer=layer)

    def __getattr__(self, name: str) -> Any:
        if name == "layer":  # not set yet: __init__ failed
            raise AttributeError(name)
        return getattr(self.layer, name)

    # ------------------------------------------------------------------ outage bookkeeping

    def _failed(self, operation: str, exc: BaseException) -> None:
        raise_if_cancelled()
        LAYER_ERRORS.labels(operation).inc()
        if self.up:
            self.up = False
            LAYER_UP.set(0)
            logger.warning("live delivery failing, events are still stored: channel layer %s: %r", operation, exc)

    def _succeeded(self) -> None:
        if not self.up:
            self.up = True
            LAYER_UP.set(1)
            logger.warning("live delivery restored")

    async def _call(self, operation: str, *args: Any) -> bool:
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                await keep_cancellation(getattr(self.layer, operation)(*args))
        except Exception as exc:  # noqa: BLE001 - the policy: any failure of the layer is an outage
            self._failed(operation, exc)
            return False
        self._succeeded()
        return True

    # ------------------------------------------------------------------ the layer API

    async def group_add(self, group: str, channel: str) -> bool:
        return await self._call("group_add", group, channel)

    async def group_discard(self, group: str, channel: str) -> bool:
        return await self._call("group_discard", group, channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> bool:
        return await self._call("group_send", group, message)

    async def send(self, channel: str, message: dict[str, Any]) -> bool:
        return await self._call("send", channel, message)

    async def new_channel(self, prefix: str = "specific.") -> str:
        try:
            return await keep_cancellation(self.layer.new_channel(prefix))
        except Exception as exc:  # noqa: BLE001
            self._failed("new_channel", exc)
            return f"{prefix}unavailable!{uuid.uuid4().hex}"  # receive on it waits until the layer is back

    async def receive(self, channel: str) -> dict[str, Any]:
        """The next message for ``channel``; while the layer fails, waits and tries again."""
        attempt = 0
        while True:
            try:
                message = await keep_cancellation(self.layer.receive(channel))
            except Exception as exc:  # noqa: BLE001
                self._failed("receive", exc)
                await asyncio.sleep(RECEIVE_RETRY[min(attempt, len(RECEIVE_RETRY) - 1)])
                attempt += 1
                continue
            if attempt:
                self._succeeded()
            return message

    def forget_channel(self, channel: str) -> None:
        forget = getattr(self.layer, "forget_channel", None)
        if forget is not None:
            forget(channel)

    async def check(self) -> str:
        """``"ok"``, or the error a round trip through the layer raised: for ``/health``."""
        try:
            async with asyncio.timeout(2):
                await self.layer.group_send("health.check", {"type": "health.check"})
        except Exception as exc:  # noqa: BLE001
            return f"error: {exc!r}"
        return "ok"


def configured_layer() -> BestEffortLayer | None:
    """The process's channel layer, through the best-effort policy; None when none is configured."""
    return BestEffortLayer.wrap(get_channel_layer())
