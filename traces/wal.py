"""SQLite's write-ahead log copied back into the database file by a thread of its own.

By default the connection whose commit takes the log past 1,000 pages copies it back into the
database file (a checkpoint, with an fsync) inside that commit. For the history's writer that
was about a tenth of its time under load, waiting for the disk while the events it was storing
waited to be delivered. The writer's connection turns automatic checkpoints off instead, and a
daemon thread with a connection of its own checkpoints every ``CHECKPOINT_EVERY`` seconds, in
``PASSIVE`` mode: it copies what no reader still needs and never blocks the writer or a reader.
Python's ``sqlite3`` lets go of the GIL while SQLite works, so the copying and the fsync run
beside the writer, on another core.

Other connections (pages, commands) keep SQLite's default; MySQL and MariaDB are untouched.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

from django.db import connection

logger = logging.getLogger(__name__)

CHECKPOINT_EVERY = 0.5  # seconds

_configured = threading.local()  # .connection: this thread's connection, once its checkpoints are off
_lock = threading.Lock()
_checkpointers: dict[str, threading.Thread] = {}


def writer_connection() -> None:
    """On the writer's thread, before a write: its connection leaves checkpoints to the thread."""
    if connection.vendor != "sqlite":
        return
    connection.ensure_connection()
    raw = connection.connection
    if getattr(_configured, "connection", None) is raw:
        return
    path = str(connection.settings_dict["NAME"])
    if _in_memory(path):
        return  # one connection's private database: nothing another thread could copy
    raw.execute("PRAGMA wal_autocheckpoint=0")
    _configured.connection = raw
    with _lock:
        if path not in _checkpointers or not _checkpointers[path].is_alive():
            thread = threading.Thread(target=_checkpoint_loop, args=(path,), name="sqlite-checkpoint", daemon=True)
            _checkpointers[path] = thread
            thread.start()


def checkpoint(path: str, database: sqlite3.Connection | None = None) -> tuple[int, int, int]:
    """One ``PASSIVE`` checkpoint: (busy, pages in the log, pages copied), as SQLite reports them."""
    own = database is None
    database = database or sqlite3.connect(path, timeout=20)
    try:
        busy, logged, copied = database.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(logged), int(copied)
    finally:
        if own:
            database.close()


def _checkpoint_loop(path: str) -> None:
    database = sqlite3.connect(path, timeout=20)
    while True:
        time.sleep(CHECKPOINT_EVERY)
        try:
            checkpoint(path, database)
        except sqlite3.Error as exc:  # a locked or vanished file: the next round tries again
            logger.debug("sqlite checkpoint of %s failed: %s", path, exc)


def _in_memory(path: str) -> bool:
    return path in ("", ":memory:") or "mode=memory" in path or path.startswith("file::memory:")
