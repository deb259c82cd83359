"""The live path's database reads, on a small pool of threads that keep their connections.

``database_sync_to_async`` closes and reopens the connection around every call (Django's
advice under ASGI is CONN_MAX_AGE=0), and a reconnect costs more than the query: SQLite runs
its PRAGMAs and registers its functions again, MySQL does a handshake. The consumer's reads
(the session's running trace, a trace's owner, backfill) run here instead: ``READ_THREADS``
threads, one connection each, kept for the life of the process and reopened after an error.
The recorder's writer thread does the same for writes, so a server process holds at most
``READ_THREADS + 1`` connections for its live traffic, however many sockets it serves.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from django.db import InterfaceError, OperationalError, connection

READ_THREADS = 2

_readers = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="trace-reads")

P = ParamSpec("P")
R = TypeVar("R")


def _call(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    try:
        return fn(*args, **kwargs)
    except (OperationalError, InterfaceError):
        # A connection the server dropped (restart, wait_timeout): reconnect once.
        connection.close()
        return fn(*args, **kwargs)


def live_read(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Run a read-only ORM function on the reader threads."""

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.get_running_loop().run_in_executor(_readers, functools.partial(_call, fn, *args, **kwargs))

    return run
