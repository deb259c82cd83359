"""Where the commit path runs: on a thread of this process, or in a writer process of its own.

Both sinks run the same ``traces.store.writer.Writer`` behind one interface: ``send(batch)``
returns a future of the batch's ``Outcome``; batches are stored and answered in the order they
are sent. The process's runtime (``traces.runtime``) picks one from the settings, once.

- ``ThreadSink`` stores one batch at a time on a thread of its own: commands, tests, and an
  in-memory SQLite database (another process cannot open it).
- ``ProcessSink`` (``TRACE_WRITER_PROCESS``, a server's default) sends batches over a pipe to a
  child process (``python -m traces.store.writer_process``), which stores them on another core:
  the projection, the values' conversion and the inserts are Python work that would otherwise
  take turns with the sockets on the server's one interpreter. Up to ``pipeline`` batches are on
  their way at once, so the server delivers one batch while the child stores the next. A child
  that dies is replaced, and the batches it had not answered go to the new one, which reads how
  far their traces are stored and does not write anything twice. The child ignores SIGINT and
  SIGTERM (the server drains through it when it stops) and ends when the server closes the pipe,
  however the server ends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from django.db import connections

from traces.store.pipe import HEADER, frame
from traces.store.writer import RETRY_DELAYS, Batch, Failure, FailureKind, Outcome, Writer

logger = logging.getLogger(__name__)

READY_SECONDS = 60.0  # for a writer process to set Django up and say it is ready
PIPE_BYTES = 1024 * 1024  # Linux's default most for an unprivileged process
RESTARTS = 3  # writer processes started in a row for one batch before it is given up
COMMAND = [sys.executable, "-m", "traces.store.writer_process"]


class Sink(Protocol):
    """Stores batches in the order they are sent (see the module docstring)."""

    batch_size: int  # events in a batch, at most
    pipeline: int  # batches sent and not answered, at most

    async def start(self) -> None:
        """Be ready to store; raises ``WriterProcessFailed`` if the writer process does not come up."""

    def send(self, batch: Batch) -> asyncio.Future[Outcome]:
        """Store ``batch`` after the batches sent before it."""

    async def aclose(self) -> None:
        """Stop once what was sent is stored."""


def in_memory_database() -> bool:
    """The history is an in-memory SQLite database, which another process cannot open."""
    database = connections["default"]
    return database.vendor == "sqlite" and bool(database.is_in_memory_db())  # type: ignore[attr-defined]


class ThreadSink:
    batch_size = 500
    pipeline = 1

    def __init__(self, retry_delays: Sequence[float] = RETRY_DELAYS) -> None:
        self.writer = Writer(retry_delays)
        self._thread: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trace-writer")

    def send(self, batch: Batch) -> asyncio.Future[Outcome]:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trace-writer")
        return asyncio.get_running_loop().run_in_executor(self._thread, self.writer.store, batch)

    async def aclose(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, _close_thread, thread)


def _close_thread(thread: ThreadPoolExecutor) -> None:
    """Close the thread's database connection on it, then let it end."""
    thread.submit(connections.close_all).result()
    thread.shutdown(wait=True)


class WriterProcessFailed(Exception):
    """The writer process did not start, or stopped and could not be replaced."""


class _Gone(Exception):
    """The writer process stopped, or answered what it should not."""


class ProcessSink:
    batch_size = 100
    pipeline = 8

    def __init__(
        self,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        ready_seconds: float = READY_SECONDS,
        command: Sequence[str] = COMMAND,
    ) -> None:
        self.retry_delays = tuple(retry_delays)
        self.ready_seconds = ready_seconds
        self.command = list(command)
        self.process: subprocess.Popen | None = None
        self._pipe: asyncio.WriteTransport | None = None
        self._answers: asyncio.StreamReader | None = None
        self._reader: asyncio.Task | None = None
        self._outstanding: collections.deque[tuple[Batch, asyncio.Future[Outcome]]] = collections.deque()
        self._starting: asyncio.Task | None = None

    @property
    def pid(self) -> int | None:
        process = self.process
        return process.pid if process is not None and process.poll() is None else None

    async def start(self) -> None:
        """Start the writer process, once (callers at the same time wait for the same start)."""
        if self.process is not None and self.process.poll() is None:
            return
        if self._starting is None or self._starting.done():
            self._starting = asyncio.get_running_loop().create_task(self._spawn(), name="writer-process-start")
        try:
            await asyncio.shield(self._starting)
        finally:
            if self._starting is not None and self._starting.done():
                self._starting = None

    async def _spawn(self) -> None:
        started = time.monotonic()
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        process = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=root,
            start_new_session=True,  # a Ctrl-C to the server's group does not stop it mid-drain
        )
        assert process.stdin is not None and process.stdout is not None
        if hasattr(fcntl, "F_SETPIPE_SZ"):
            # A batch is written while the child stores the one before, not as the child reads it
            # 64 KiB at a time (Linux; elsewhere the pipe keeps its size).
            with contextlib.suppress(OSError):
                fcntl.fcntl(process.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        loop = asyncio.get_running_loop()
        answers = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(answers), process.stdout)
        pipe, _ = await loop.connect_write_pipe(asyncio.BaseProtocol, process.stdin)
        hello = {"database": dict(connections["default"].settings_dict), "retry_delays": self.retry_delays}
        pipe.write(frame(hello))
        try:
            answer = await asyncio.wait_for(_read(answers), self.ready_seconds)
        except TimeoutError:
            answer = f"no answer within {self.ready_seconds:g} s"
        except (EOFError, asyncio.IncompleteReadError, pickle.PickleError, ValueError):
            answer = f"it exited with code {process.wait()}"
        if answer != ("ready", process.pid):
            pipe.close()
            process.kill()
            await loop.run_in_executor(None, process.wait)
            raise WriterProcessFailed(
                f"the history's writer process ({' '.join(self.command)}) did not start: {answer}"
                " (its errors are in the server's log above)"
            )
        self.process, self._pipe, self._answers = process, pipe, answers
        if self._reader is None or self._reader.done():
            self._reader = loop.create_task(self._read_answers(), name="writer-process-answers")
        logger.info("history writer process %d started in %.1f s", process.pid, time.monotonic() - started)

    def send(self, batch: Batch) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._outstanding.append((batch, future))
        if self._pipe is not None and not self._pipe.is_closing():
            self._pipe.write(frame(_message(batch)))
        elif self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read_answers(), name="writer-process-answers")
        return future

    async def _read_answers(self) -> None:
        """Answers, in the order the batches were sent; a process that stops is replaced and sent
        every batch it had not answered."""
        restarts = 0
        while True:
            try:
                if self._answers is None or self.process is None or self.process.poll() is not None:
                    raise _Gone("not running")
                answer = await _read(self._answers)
                if not self._outstanding:
                    raise _Gone(f"an answer for no batch: {answer!r}")
                outcome = _outcome(answer)
                _, future = self._outstanding.popleft()
                if not future.done():
                    future.set_result(outcome)
                restarts = 0
            except asyncio.CancelledError:
                raise
            except (_Gone, OSError, EOFError, asyncio.IncompleteReadError, pickle.PickleError, ValueError) as exc:
                if not self._outstanding and (self.process is None or self.process.poll() is not None):
                    # It stopped with nothing to answer: the next batch starts another (and this
                    # reader again), instead of going down a dead pipe that nobody reads.
                    await self._stop_process(seconds=1.0)
                    return
                restarts += 1
                await self._replace(exc, restarts)

    async def _replace(self, exc: BaseException, restarts: int) -> None:
        code = self.process.poll() if self.process is not None else None
        logger.error("history writer process stopped (%s, exit code %s): starting another", exc, code)
        await self._stop_process(seconds=1.0)
        if restarts > RESTARTS:
            failure = Failure(FailureKind.UNAVAILABLE, "trace history unavailable: its writer process keeps stopping")
            while self._outstanding:
                batch, future = self._outstanding.popleft()
                if not future.done():
                    future.set_result(Outcome(failed={event.trace_id: failure for event in batch.events}))
            return
        try:
            await self._spawn()
        except WriterProcessFailed as failed:
            logger.error("%s", failed)
            await asyncio.sleep(min(2.0, 0.2 * restarts))
            return
        assert self._pipe is not None
        for batch, _ in self._outstanding:
            batch.recovering = True  # the process that stopped may have stored some of it
            self._pipe.write(frame(_message(batch)))

    async def _stop_process(self, seconds: float) -> None:
        process, pipe = self.process, self._pipe
        self.process, self._pipe, self._answers = None, None, None
        if pipe is not None:
            pipe.close()  # the child stores what it has read and exits
        if process is not None:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, process.wait, seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                await loop.run_in_executor(None, process.wait)

    async def aclose(self, seconds: float = 10.0) -> None:
        """Close the pipe (the child stores what it has and exits), then wait for it."""
        if self._starting is not None:
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        await self._stop_process(seconds)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        while self._outstanding:
            _, future = self._outstanding.popleft()
            future.cancel()


async def _read(answers: asyncio.StreamReader) -> Any:
    (size,) = HEADER.unpack(await answers.readexactly(HEADER.size))
    return pickle.loads(await answers.readexactly(size))


def _message(batch: Batch) -> tuple:
    """What the child needs: each event as numbered and serialised here (it reads the data back
    from the text), the first rows of traces that start, and whether some may be stored already."""
    return ("store", [event.as_tuple() for event in batch.events], batch.origins, batch.recovering)


def _outcome(answer: Any) -> Outcome:
    kind, stored, failed = answer
    if kind != "stored":
        raise _Gone(f"unexpected answer {kind!r}")
    return Outcome(set(stored), {trace_id: Failure(FailureKind(k), reason) for trace_id, (k, reason) in failed.items()})
