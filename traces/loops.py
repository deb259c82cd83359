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
    """Await ``awaitable``; if the task was cancelled meanwhile and the library returned anyway,
    raise the cancellation.

    redis-py (under channels-redis) sometimes returns normally from a call whose task was
    cancelled, dropping the ``CancelledError``: a loop around such a call would never end.
    """
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    result = await awaitable
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
    return result
