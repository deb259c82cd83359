"""Process-wide objects that belong to one event loop (the server has one; tests have many)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
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
