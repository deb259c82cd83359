"""A small pool of read-only connections to the agent's database, shared by the threads that query it.

Opening a connection costs more than the agent's typical query (a MySQL handshake and its session
settings; SQLite's open and PRAGMAs). The pool keeps up to ``size`` of them: a query takes one,
or opens one if none is idle and fewer than ``size`` exist, or waits for one. A connection goes
back when its query is done, or is closed instead when it may be broken (a lost connection, a
cancelled statement). One that has been idle for a while is checked before it is handed out.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any


class PoolTimeout(Exception):
    """Every connection stayed busy for as long as a query may wait."""


class ConnectionPool:
    def __init__(
        self,
        connect: Callable[[], Any],
        size: int,
        *,
        check: Callable[[Any], bool] | None = None,
        check_after: float = 30.0,
    ) -> None:
        self._connect = connect
        self.size = size
        self._check = check
        self._check_after = check_after
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[tuple[Any, float]] = []  # (connection, idle since); the last is the warmest
        self._closed = False
        self.in_use = 0  # connections handed out and not yet back
        self.opened = 0  # connections opened over the pool's life: for tests and benchmarks

    def acquire(self, timeout: float) -> Any:
        if not self._slots.acquire(timeout=timeout):
            raise PoolTimeout(f"all {self.size} connections to the agent's database stayed busy for {timeout:g} s")
        with self._lock:
            self.in_use += 1
        try:
            while True:
                with self._lock:
                    idle = self._idle.pop() if self._idle else None
                if idle is None:
                    connection = self._connect()
                    with self._lock:
                        self.opened += 1
                    return connection
                connection, since = idle
                if self._check is None or time.monotonic() - since < self._check_after or self._check(connection):
                    return connection
                _close(connection)  # gone stale while idle (server restart, wait_timeout): try the next
        except BaseException:
            self._give_back()
            raise

    def release(self, connection: Any, reuse: bool = True) -> None:
        try:
            with self._lock:
                keep = reuse and not self._closed
                if keep:
                    self._idle.append((connection, time.monotonic()))
            if not keep:
                _close(connection)
        finally:
            self._give_back()

    def _give_back(self) -> None:
        with self._lock:
            self.in_use -= 1
        self._slots.release()

    @property
    def idle(self) -> int:
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        """Close the idle connections (those in use are closed when they come back)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection, _ in idle:
            _close(connection)


def _close(connection: Any) -> None:
    with contextlib.suppress(Exception):
        connection.close()
