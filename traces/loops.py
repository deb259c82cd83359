"""Process-wide objects that belong to one event loop (the server has one; tests have many)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """``get()`` returns the running loop's instance, made by ``factory`` on first use."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self.factory = factory
        self.instances: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        instance = self.instances.get(loop)
        if instance is None:
            instance = self.instances[loop] = self.factory()
        return instance

    def all(self) -> list[T]:
        return list(self.instances.values())


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that a library turned into another exception.

    A long-lived loop that retries on ``Exception`` would otherwise swallow it and never end.
    Call it first thing in such an ``except Exception`` block.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def keep_cancellation(awaitable: Awaitable[T]) -> T:
    """Await a library call so that cancelling the caller always ends the caller, at once.

    redis-py (under channels-redis) sometimes drops a ``CancelledError``: the call then returns
    normally, or goes on waiting (channels-redis's receive loops to its next blocking pop), and a
    loop around it never ends. So the call runs as a task of its own behind a shield: the caller's
    cancellation ends the caller here, and the call is cancelled again until it has ended
    (``CANCEL_GRACE`` at most).
    """
    call = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        await _cancel_until_done(call)
        raise


CANCEL_GRACE = 2.0  # seconds to keep cancelling a call that swallows its cancellation


async def _cancel_until_done(call: asyncio.Future) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CANCEL_GRACE
    while not call.done() and loop.time() < deadline:
        call.cancel()
        await asyncio.wait([call], timeout=0.05)
    if call.done() and not call.cancelled():
        call.exception()  # retrieved: it ended some other way, which no longer matters
