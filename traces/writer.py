"""The history's writer process: a server's batches of events are stored by a process of its own.

Storing an event — projecting it onto its trace and run rows, converting the rows' values for
the driver, the insert — is Python work, and on the server's one interpreter it took a third of
the live path's time (docs/benchmarks.md). With ``TRACE_WRITER_PROCESS`` on (the default for
servers: ``tracesite/asgi.py`` calls ``use_writer_process()``), the server numbers each event and
serialises its envelope as before, then sends the batch over a pipe to a child process
(``python -m traces.writer_entry``), which projects and writes it with the same code
(``traces.recorder.Batch``) on another core.

- **Stored before delivered** holds: a batch is delivered once the child has answered that it
  committed it. Up to ``recorder.PIPELINE`` batches are on their way, answered in order, so the
  server delivers one batch while the child stores the next.
- **The child knows what the recorder's thread knew**: each trace's committed rows
  (``TraceState``) go with the first batch that names the trace (again to a new child), and the
  child forgets them when the server's ``TraceState`` is collected.
- **Failures** are decided in the child, by the recorder's own ``_store``: a trace whose event
  cannot be stored fails alone; if the database is down, the child retries with delays, then
  fails the batch. Events of a trace that do not follow its stored ones (a batch sent while the
  one before failed) are refused, so a stored trace never has a hole.
- **A child that dies** is replaced when its answer is awaited, and every batch it had not
  answered goes to the new one, which first reads how far each of their traces is stored: what
  the old one committed without answering is answered as stored, not written twice.
- The child ignores SIGINT and SIGTERM (a server's shutdown drains through it) and stops when the
  server closes the pipe, however the server ends.

Commands and tests in one process store on the recorder's thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import fcntl
import io
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import DatabaseError, connections

from agents.events import EventType
from traces import protocol, recorder
from traces.access import SessionKey
from traces.recorder import Batch, Outcome, Pending, TraceState

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("!I")
READY_SECONDS = 60.0
PIPE_BYTES = 1024 * 1024  # Linux's default most for an unprivileged process


class WriterGone(Exception):
    """The writer process stopped, or answered what it should not."""


def _send(stream: IO[bytes], message: Any) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(body)))
    stream.write(body)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    (size,) = _HEADER.unpack(_exactly(stream, _HEADER.size))
    return pickle.loads(_exactly(stream, size))


def _exactly(stream: IO[bytes], size: int) -> bytes:
    """``size`` bytes from a pipe (an unbuffered read returns what has arrived so far)."""
    data = stream.read(size)
    if data is None or len(data) < size:
        parts = [data or b""]
        got = len(parts[0])
        while got < size:
            more = stream.read(size - got)
            if not more:
                raise EOFError("the pipe closed")
            parts.append(more)
            got += len(more)
        data = b"".join(parts)
    return data


def _waiting(stream: IO[bytes]) -> bool:
    """More has arrived on the pipe already (never for a stream that is not a pipe)."""
    try:
        return bool(select.select([stream.fileno()], [], [], 0)[0])
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


# ------------------------------------------------------------------------------ the server's side


def _spawn() -> subprocess.Popen:
    """Start a writer process and send it its hello; it answers once Django is set up in it."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    popen = subprocess.Popen(
        [sys.executable, "-m", "traces.writer_entry"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd=root,
        start_new_session=True,  # a Ctrl-C to the server's group does not stop it mid-drain
    )
    assert popen.stdin is not None
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        # A pipe of PIPE_BYTES: a batch is written while the child stores the one before, not as
        # the child reads it 64 KiB at a time (Linux; elsewhere the pipe keeps its size).
        with contextlib.suppress(OSError):
            fcntl.fcntl(popen.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    hello = {"database": dict(connections["default"].settings_dict), "retry_delays": recorder.RETRY_DELAYS}
    popen.stdin.write(_frame(hello))
    popen.stdin.flush()
    return popen


class _Child:
    """A writer process's pipes on the event loop: batches written without blocking, answers read."""

    def __init__(self, popen: subprocess.Popen, reader: asyncio.StreamReader, writer: asyncio.WriteTransport) -> None:
        self.popen = popen
        self.reader = reader
        self.writer = writer

    @classmethod
    async def adopt(cls, popen: subprocess.Popen) -> _Child:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), popen.stdout)
        # Written without waiting: what is on its way is bounded by recorder.PIPELINE batches.
        writer, _ = await loop.connect_write_pipe(asyncio.BaseProtocol, popen.stdin)
        return cls(popen, reader, writer)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def write(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise WriterGone("its pipe is closed")
        self.writer.write(data)

    async def read(self) -> Any:
        (size,) = _HEADER.unpack(await self.reader.readexactly(_HEADER.size))
        return pickle.loads(await self.reader.readexactly(size))

    async def aclose(self, seconds: float) -> None:
        """Close the pipe (the process finishes its batch and exits), then wait for it."""
        self.writer.close()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.popen.wait, seconds)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            await loop.run_in_executor(None, self.popen.wait)


_spare: subprocess.Popen | None = None  # started with the server, before its event loop runs


def _take_spare() -> subprocess.Popen | None:
    global _spare
    spare, _spare = _spare, None
    if spare is not None and spare.poll() is not None:
        return None
    return spare


@dataclasses.dataclass
class _Sent:
    """A batch sent to the writer process and not answered yet."""

    items: list[Pending]
    batch: Batch  # its numbering and the trace rows' fields, committed when it is answered
    error: Exception | None = None  # it could not be numbered: answered as failed without asking


class WriterProcess:
    """An event loop's writer process (a server has one loop): ``send()`` numbers a batch and
    writes it to the pipe, ``receive()`` reads the answer for the oldest batch sent; up to
    ``recorder.PIPELINE`` batches are on their way. Both run on the loop, without threads."""

    def __init__(self) -> None:
        self.process: _Child | None = None
        self.generation = 0
        self._forgotten: collections.deque[int] = collections.deque()  # keys of TraceStates gone
        # Whose TraceStates are watched: a weak reference each, whose callback says it is gone
        # (weakref.finalize cost 5 µs a trace, a twentieth of an ingested span's time).
        self._watched: dict[int, weakref.ref] = {}
        self._outstanding: collections.deque[_Sent] = collections.deque()
        self._broken = False  # a write failed: the process is replaced when the answer is awaited
        self._starting: asyncio.Future | None = None

    @property
    def pid(self) -> int | None:
        process = self.process
        return process.pid if process is not None and process.returncode is None else None

    async def start(self) -> None:
        spare = _take_spare()  # started and ready with the server
        child = await _Child.adopt(spare or _spawn())
        try:
            answer = ("ready", child.pid) if spare else await asyncio.wait_for(child.read(), READY_SECONDS)
            if answer != ("ready", child.pid):
                raise WriterGone(f"unexpected first answer: {answer!r}")
        except BaseException:
            child.popen.kill()
            await child.aclose(seconds=1.0)
            raise
        # Batches go to it only now that it is ready: its pipe carries nothing before its answer.
        self.process = child
        self.generation += 1
        self._broken = False
        logger.info("history writer process %d started", child.pid)

    async def aclose(self, seconds: float = 10.0) -> None:
        """Close the pipe (the child finishes its batch and exits), then wait for it."""
        process, self.process = self.process, None
        if process is not None:
            await process.aclose(seconds)

    def warm_up(self) -> None:
        """Start the process now, in the background: Django's set-up in it takes about a second,
        which the first batch would otherwise wait for (and deliver late, all at once)."""
        if self.process is None and self._starting is None:
            self._starting = asyncio.ensure_future(self.start())
            self._starting.add_done_callback(_said)

    async def _started(self) -> None:
        if self._starting is None:
            self.warm_up()
        assert self._starting is not None
        try:
            await asyncio.shield(self._starting)
        finally:
            if self._starting is not None and self._starting.done():
                self._starting = None

    async def send(self, items: list[Pending]) -> None:
        """Number and envelope the batch here, and send it to be stored there."""
        batch = Batch(rows=False)
        try:
            for item in items:
                batch.number(item)
                batch.record(item)
        except Exception as exc:  # a bug: the batch fails, the writer goes on
            logger.exception("a batch of trace events could not be numbered")
            self._outstanding.append(_Sent(items, batch, exc))
            return
        sent = _Sent(items, batch)
        self._outstanding.append(sent)
        if self._broken:
            return  # sent with the others once another process has started
        try:
            if self.process is None:
                await self._started()
            await self._write(sent)
        except _GONE as exc:
            logger.error("history writer process: a batch could not be sent (%s)", exc)
            self._broken = True

    async def receive(self) -> Outcome:
        """The answer for the oldest batch sent: which of its traces were stored."""
        sent = self._outstanding[0]
        for _ in range(3):
            if sent.error is not None:
                self._outstanding.popleft()
                return Outcome([], [(sent.items, DatabaseError(f"not stored: {sent.error}"))])
            try:
                if self._broken or self.process is None:
                    raise WriterGone("not running")
                answer = await self.process.read()
            except _GONE as exc:
                await self._recover(exc)
                continue
            self._outstanding.popleft()
            return self._outcome(sent, answer)
        self._outstanding.popleft()
        return Outcome([], [(sent.items, DatabaseError("the history's writer process cannot be started"))])

    async def _recover(self, exc: Exception) -> None:
        """The process stopped (or never started): start another and send it every batch not
        answered, in order."""
        code = self.process.returncode if self.process is not None else None
        logger.error("history writer process failed (%s, exit code %s): starting another", exc, code)
        await self.aclose(seconds=1.0)
        self._starting = None
        try:
            await self.start()
            for sent in self._outstanding:
                if sent.error is None:
                    await self._write(sent)
        except _GONE as again:
            logger.error("history writer process could not be started: %s", again)
            self._broken = True

    async def _write(self, sent: _Sent) -> None:
        assert self.process is not None
        self.process.write(_frame(self._message(sent.items)))

    def _outcome(self, sent: _Sent, answer: tuple) -> Outcome:
        kind, stored_keys, failed_parts = answer
        if kind != "stored":
            return Outcome([], [(sent.items, DatabaseError(f"the history's writer process failed: {stored_keys}"))])
        stored = [item for item in sent.items if item.state.key in stored_keys]
        failed: list[tuple[list[Pending], Exception]] = []
        for keys, message in failed_parts:
            part = [item for item in sent.items if item.state.key in keys]
            failed.append((part, DatabaseError(message)))
        return Outcome([(sent.batch, stored)] if stored else [], failed)

    def _gone(self, key: int) -> Callable[[weakref.ref], None]:
        def gone(_: weakref.ref) -> None:
            self._watched.pop(key, None)
            self._forgotten.append(key)

        return gone

    def _message(self, items: list[Pending]) -> tuple:
        """What the child needs: the traces it has not seen (their committed rows), the ones to
        forget, and each event as numbered and serialised here."""
        states: list[tuple] = []
        events: list[tuple] = []
        for item in items:
            state = item.state
            if state.writer_generation != self.generation:
                if not state.writer_generation:
                    self._watched[state.key] = weakref.ref(state, self._gone(state.key))
                state.writer_generation = self.generation
                states.append((state.key, state.trace_id, state.trace, state.runs, state.stored, state.last_seq))
            events.append((state.key, item.seq, str(item.event_type), item.timestamp, item.message_id, item.text))
        forgotten = []
        while self._forgotten:  # appended to by the garbage collector
            forgotten.append(self._forgotten.popleft())
        # A process started after another stopped may find some of the batches already stored.
        return ("store", forgotten, states, events, self.generation > 1)


def _said(start: asyncio.Future) -> None:
    """A start that failed in the background is logged (and tried again with the next batch)."""
    if not start.cancelled() and start.exception() is not None:
        logger.error("history writer process could not be started: %s", start.exception())


_GONE = (OSError, EOFError, asyncio.IncompleteReadError, WriterGone, pickle.PickleError, ValueError, TimeoutError)


def _frame(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


def use_writer_process(enabled: bool | None = None) -> bool:
    """Store batches in a writer process (``TRACE_WRITER_PROCESS``), one for each event loop's
    store created from now on; with ``enabled`` off, on the recorder's thread. An in-memory SQLite
    database stays on the thread: another process cannot open it."""
    if enabled is None:
        enabled = settings.TRACE_WRITER_PROCESS
    database = connections["default"]
    if database.vendor == "sqlite" and database.is_in_memory_db():  # type: ignore[attr-defined]
        enabled = False
    recorder.writer_process = WriterProcess if enabled else None
    global _spare
    if enabled and _spare is None:
        # Ready before the server accepts its first socket: Django's set-up in it takes about a
        # second, which the first run's events would otherwise wait for, then come all at once.
        spare = _spawn()
        assert spare.stdout is not None
        try:
            answer = _receive(spare.stdout)
        except (OSError, EOFError, pickle.PickleError) as exc:
            answer = repr(exc)
        if answer == ("ready", spare.pid):
            _spare = spare
        else:
            logger.error("history writer process did not start (%s): starting one with the first batch", answer)
            spare.kill()
            spare.wait()
    elif not enabled and _spare is not None:
        spare, _spare = _spare, None
        spare.kill()  # it has stored nothing
        spare.wait()
    return enabled


# ------------------------------------------------------------------------------- the child's side


def ready(answers: IO[bytes], hello: dict[str, Any]) -> None:
    """Django is set up: store as the server would (its retry delays) and say so."""
    recorder.RETRY_DELAYS = tuple(hello.get("retry_delays", recorder.RETRY_DELAYS))
    _send(answers, ("ready", os.getpid()))


MERGE = 16  # batches already waiting on the pipe, stored in one transaction (and answered one by one)


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """The child's loop: store the batches it is sent and answer, for each, which traces were stored.

    The batches that are waiting when one is read are stored with it in one transaction: under
    load, one commit (an fsync on MariaDB) for several batches instead of one each."""
    states: dict[int, TraceState] = {}
    nobody = SessionKey("")
    closed = False
    while not closed:
        try:
            messages = [_receive(requests)]
        except EOFError:
            return  # the server closed the pipe: it has stopped
        while len(messages) < MERGE and _waiting(requests):
            try:
                messages.append(_receive(requests))
            except EOFError:
                closed = True  # store what came before the end, then stop
                break
        batches: list[list[Pending]] = []
        try:
            for _, forgotten, new, events, recovering in messages:
                for key in forgotten:
                    states.pop(key, None)
                for key, trace_id, trace, runs, stored, last_seq in new:
                    states[key] = TraceState(
                        trace_id=trace_id, session=nobody, trace=trace, runs=runs, stored=stored, last_seq=last_seq,
                        key=key,
                    )  # fmt: skip
                if recovering and new:
                    _already_stored([states[key] for key, *_ in new])
                batches.append([_pending(states, *event) for event in events])
            items, refused = _in_sequence([item for batch in batches for item in batch])
            outcome = recorder._store(items, numbered=True) if items else Outcome([], [])
        except Exception as exc:  # a bug, not the database: every trace of these batches fails, the child goes on
            logger.exception("history writer process: a batch could not be stored")
            for _ in messages:
                _send(answers, ("error", f"{type(exc).__name__}: {exc}", []))
            continue
        stored_keys: set[int] = set()
        for rows, part in outcome.stored:
            rows.commit(part)
            stored_keys.update(item.state.key for item in part)
        failures: dict[int, str] = {key: "an earlier event of this trace was not stored" for key in refused}
        for part, error in outcome.failed:
            failures.update((item.state.key, f"{error}") for item in part)
        for batch in batches:
            keys = {item.state.key for item in batch}
            failed = [({key}, failures[key]) for key in keys if key in failures]
            _send(answers, ("stored", keys & stored_keys, failed))


def _pending(
    states: dict[int, TraceState], key: int, seq: int, kind: str, timestamp: Any, message_id: str, text: str
) -> Pending:
    """An event as the server numbered it; its data read back from its envelope's text."""
    data = protocol.loads(text)["data"]
    return Pending(states[key], _EVENT_TYPES[kind], data, timestamp, None, seq=seq, text=text, message_id=message_id)


_EVENT_TYPES = {str(kind): kind for kind in EventType}  # EventType(kind) costs a Python call each


def _in_sequence(items: list[Pending]) -> tuple[list[Pending], set[int]]:
    """The events that follow their trace's stored ones without a gap, and the traces refused: a
    batch sent while the one before failed carries events after the ones that were not stored."""
    following: dict[int, int] = {}
    refused: set[int] = set()
    kept = []
    for item in items:
        state = item.state
        expected = following.get(state.key, state.last_seq + 1)
        if state.key in refused or (item.seq != expected and item.seq > state.stored_through):
            refused.add(state.key)
            continue
        following[state.key] = item.seq + 1
        kept.append(item)
    return [item for item in kept if item.state.key not in refused], refused


def _already_stored(states: list[TraceState]) -> None:
    """After a writer process stopped without answering: how far each trace's events are stored."""
    from django.db.models import Max

    from traces.models import Event

    found = dict(
        Event.objects.filter(trace_id__in=[state.trace_id for state in states])
        .values_list("trace_id")
        .annotate(last=Max("seq"))
        .values_list("trace_id", "last")
    )
    for state in states:
        state.stored_through = found.get(state.trace_id) or 0
