"""An OTLP export's body, decoded into ``SpanRecord``s: on the event loop when it is small, in a
process of its own when it is large.

Decoding is the CPU-heavy part of an export: inflating the body, protobuf's or JSON's parse
(one C call that holds the GIL for a whole 15 MiB body), the attributes as Python values, and
each span's run view. On the server's event loop that stalled every socket of the process for
seconds, and a thread would not help: the parse holds the interpreter. So a body over
``TRACE_OTLP_DECODE_INLINE_BYTES`` (compressed bodies count eight times their size) is decoded
by a decoder process, which sends the records back pickled in chunks of ``CHUNK`` spans; the
event loop unpickles one chunk per turn, so other sockets are served between them. This module
imports nothing of Django, so the decoder process starts without it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from traces.ingest import otlp
from traces.ingest.spans import SpanRecord, record

logger = logging.getLogger(__name__)

CHUNK = 100  # spans unpickled in one turn of the event loop
COMPRESSED = 8  # a compressed body counts this many times its size


def decode(body: bytes, encoding: str, kind: str, body_limit: int, attribute_limit: int) -> list[SpanRecord]:
    """The export's spans; raises ``otlp.OtlpError`` for a body that is not one."""
    inflated = otlp.inflate(body, encoding, body_limit)
    return [record(span) for span in otlp.spans(otlp.parse(inflated, kind), attribute_limit)]


def _decode_in_chunks(
    body: bytes, encoding: str, kind: str, body_limit: int, attribute_limit: int
) -> tuple[str, list[bytes] | tuple[int, str]]:
    """In the decoder process: the records pickled in chunks, or the error (an ``OtlpError`` does
    not survive pickling: it travels as its status and message)."""
    try:
        records = decode(body, encoding, kind, body_limit, attribute_limit)
    except otlp.OtlpError as exc:
        return "error", (exc.status, str(exc))
    chunks = [
        pickle.dumps(records[start : start + CHUNK], protocol=pickle.HIGHEST_PROTOCOL)
        for start in range(0, len(records), CHUNK)
    ]
    return "ok", chunks


def _ready() -> bool:
    return True


PARENT_CHECK_SECONDS = 1.0


def _end_with(parent: int) -> None:
    """The decoder process's start: it ends when the server that started it is gone, even killed
    (``kill -9``): a pool's worker holds both ends of its task queue's pipe, so it would never see
    the server's end close and would wait on it for ever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="watch-server", daemon=True).start()


class Decoder:
    """Decodes exports (see the module docstring); ``processes`` off: always on the event loop."""

    def __init__(self, body_limit: int, attribute_limit: int, inline_bytes: int, processes: bool = True) -> None:
        self.body_limit = body_limit
        self.attribute_limit = attribute_limit
        self.inline_bytes = inline_bytes
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: a fork of a server with threads (its database pool, the store's) is not safe.
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_end_with,
                initargs=(os.getpid(),),
            )
        return self._pool

    async def start(self) -> None:
        """Start the decoder process now, so that the first large export does not wait for it."""
        if self.processes:
            await asyncio.get_running_loop().run_in_executor(self._executor(), _ready)

    async def decode(self, body: bytes, encoding: str, kind: str) -> list[SpanRecord]:
        size = len(body) * (COMPRESSED if encoding.strip().lower() not in ("", "identity") else 1)
        if not self.processes or size < self.inline_bytes:
            return decode(body, encoding, kind, self.body_limit, self.attribute_limit)
        loop = asyncio.get_running_loop()
        try:
            _, result = await loop.run_in_executor(
                self._executor(), _decode_in_chunks, body, encoding, kind, self.body_limit, self.attribute_limit
            )
        except BrokenProcessPool:
            logger.error("the OTLP decoder process stopped: starting another; this export is decoded here")
            self._pool = None
            return decode(body, encoding, kind, self.body_limit, self.attribute_limit)
        if isinstance(result, tuple):
            raise otlp.OtlpError(*result)
        records: list[SpanRecord] = []
        for chunk in result:
            records.extend(pickle.loads(chunk))
            await asyncio.sleep(0)  # the other sockets' turn
        return records

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)
