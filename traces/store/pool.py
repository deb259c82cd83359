"""The live path's database work, on a small pool of threads that keep their connections.

``database_sync_to_async`` closes and reopens the connection around every call (Django's advice
under ASGI is CONN_MAX_AGE=0), and a reconnect costs more than the query: SQLite runs its PRAGMAs
and registers its functions again, MySQL does a handshake. The live path's short queries run
here instead: the consumers' reads (a session's running trace, a trace's owner, backfill), an
OTLP export's token and traces, and a few small writes that are not trace events (a token's
``last_used_at``, this process's heartbeat). ``THREADS`` threads, one connection each, kept until
the process's runtime stops and reopened after an error. Events themselves are written by the
store's sink.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from django.db import InterfaceError, OperationalError, connection, connections

THREADS = 2

P = ParamSpec("P")
R = TypeVar("R")

_threads: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _threads
    with _lock:
        if _threads is None:
            _threads = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="trace-queries")
        return _threads


def _call(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    try:
        return fn(*args, **kwargs)
    except (OperationalError, InterfaceError):
        # A connection the server dropped (restart, wait_timeout): reconnect once.
        connection.close()
        return fn(*args, **kwargs)


def pooled(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Run the ORM function ``fn`` on the pool's threads."""

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.get_running_loop().run_in_executor(
            _executor(), functools.partial(_call, fn, *args, **kwargs)
        )

    return run


async def shutdown() -> None:
    """Close the pool's connections and end its threads (a stopping process; the next call starts
    it again)."""
    global _threads
    with _lock:
        threads, _threads = _threads, None
    if threads is None:
        return
    loop = asyncio.get_running_loop()
    closing = [loop.run_in_executor(threads, connections.close_all) for _ in range(THREADS)]
    await asyncio.gather(*closing, return_exceptions=True)
    await loop.run_in_executor(None, threads.shutdown)
