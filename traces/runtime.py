"""The owner of a process's life: everything it runs besides the requests and sockets it serves.

One ``Runtime`` per event loop (a server process has one loop; tests have one each):

- the event store and its sink (a server's writer process, started with a time limit:
  ``TRACE_WRITER_START_SECONDS``, and a clear error if it does not come up),
- the hub (this process's sockets) and the bus (the other processes),
- this process as a runner: its heartbeat, and the reaper that closes the runs of processes
  that died, at start-up and every ``TRACE_REAP_SECONDS`` (``traces.store.liveness``),
- the agent runs by session, the OTLP ingestor and its sweeper, the OTLP decoder process,
- in a server, the sweep that seals the dashboard's hourly sums and sums stale hours again
  (``traces.store.rollups``),
- the background jobs the layers above hand it (``spawn``: an experiment run from a page),
- the sockets' credential watch,
- at start-up, a warning in the log for each grant of the agent's database user beyond reading
  its own schema (``agents.config.warn_about_privileges``).

A server that could not render its pages (static files not collected: ``traces.checks``) does not
start at all, rather than answer every page with a 500 while ``/health`` says healthy.

``start()`` brings them up; ``stop()`` interrupts the runs and the jobs (they are recorded as
interrupted), stores and publishes what is queued, then stops every task, the writer and decoder
processes and the database pool, and waits for them. ``Lifecycle`` ties them to a server: under
uvicorn through the ASGI lifespan, under daphne (which sends no lifespan events) through Twisted's
start and shutdown triggers (``traces.compat``); a connection that arrives before the start has
finished waits for it. Commands use ``async with Runtime(kind="cli")``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from typing import Any

from django.conf import settings

from agents.config import warn_about_privileges
from agents.events import interruption
from traces import checks, compat
from traces.access import SessionKey
from traces.ingest.decoding import Decoder
from traces.ingest.ingestor import Ingestor
from traces.live.bus import Bus
from traces.live.credentials import CredentialWatch
from traces.live.hub import Hub
from traces.live.sessions import SessionRuns
from traces.loops import PerLoop
from traces.store import pool
from traces.store.event_store import EventStore
from traces.store.liveness import Liveness
from traces.store.rollups import RollupSweep
from traces.store.sinks import ProcessSink, Sink, ThreadSink, in_memory_database

logger = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 10.0
EXIT_START_FAILED = 3  # as uvicorn exits when its application's start-up fails


class NotServable(Exception):
    """The server could not render its pages; the message says what to run."""


class Runtime:
    """See the module docstring. ``kind`` is ``server`` or ``cli`` (a command: its events are
    stored on a thread, and it does not listen to the other processes)."""

    def __init__(self, kind: str = "server", sink: Sink | None = None) -> None:
        self.kind = kind
        self.hub = Hub()
        self.bus = Bus(self.hub, on_cancel=self._cancel_here)
        self.store = EventStore(sink if sink is not None else _sink(kind), self.hub, self.bus)
        self.liveness = Liveness(self.store, kind)
        self.runs = SessionRuns(self.store, self.liveness.id)
        self.ingestor = Ingestor(self.store, self.liveness.id, shared=self.bus.crosses_processes)
        self.decoder = Decoder(
            settings.TRACE_OTLP_MAX_BODY_BYTES,
            settings.TRACE_OTLP_MAX_ATTRIBUTE_BYTES,
            settings.TRACE_OTLP_DECODE_INLINE_BYTES,
            processes=kind == "server",
        )
        self.credentials = CredentialWatch()
        self.rollups = RollupSweep()
        self._starting: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self.jobs: set[asyncio.Task] = set()
        self.stopped = False

    def _cancel_here(self, session: SessionKey) -> bool:
        """A ``cancel_agent`` another process passed on: this process's run of ``session``, if any."""
        return self.runs.cancel_local(session)

    @property
    def started(self) -> bool:
        return self._starting is not None and self._starting.done() and not self._starting.exception()

    async def start(self) -> None:
        """Bring everything up, once: callers at the same time wait for the same start. Raises
        ``NotServable`` if a server could not render its pages, ``WriterProcessFailed`` if the
        writer process does not come up."""
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start(), name="runtime-start")
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        if self.kind == "server" and (problem := checks.uncollected_static_files()):
            raise NotServable(problem)
        await self.store.start()
        if self.kind == "server":
            await self.bus.start()  # this process hears the batches other processes store, and cancels
            self.ingestor.start()
            self.rollups.start()
            self._in_background(self.decoder.start(), "decoder-start")  # ready before the first large export
            # A warning in the log, not a refusal to start: the agent's database may be down for now.
            self._in_background(asyncio.to_thread(warn_about_privileges), "agent-database-grants")
        await self.liveness.start()  # beats, and closes the runs of processes that died
        logger.info("%s runtime started (runner %s)", self.kind, self.liveness.id)

    def _in_background(self, work: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_logged)

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        """Run ``work`` as a job of this process: kept referenced while it runs, its failure logged,
        and at ``stop()`` cancelled as an interruption (an agent run inside it is recorded as
        interrupted, not as cancelled by a user) and awaited before the store closes. Raises
        ``RuntimeError`` once the runtime is stopping (``work`` is then closed, never run)."""
        if self.stopped:
            work.close()
            raise RuntimeError("the server is shutting down")
        task = asyncio.get_running_loop().create_task(work, name=name)
        self.jobs.add(task)
        task.add_done_callback(self.jobs.discard)
        task.add_done_callback(_logged)
        return task

    async def _interrupt_jobs(self, seconds: float) -> int:
        jobs = list(self.jobs)
        for job in jobs:
            job.cancel(interruption("the server is shutting down"))
        if jobs:
            _, pending = await asyncio.wait(jobs, timeout=seconds)
            if pending:
                logger.warning("shutdown: %d job(s) not ended in %ss", len(pending), seconds)
        return len(jobs)

    async def stop(self, seconds: float = SHUTDOWN_SECONDS) -> None:
        """Stop cleanly (see the module docstring). What does not finish in ``seconds`` is closed
        by another process's reaper (this one no longer counts as alive)."""
        if self.stopped:
            return
        self.stopped = True
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        # The jobs' runs record their end through the store: interrupted before it drains.
        interrupted, jobs = await asyncio.gather(self.runs.interrupt_all(seconds), self._interrupt_jobs(seconds))
        try:
            async with asyncio.timeout(seconds):
                await self.store.drain()
        except TimeoutError:
            logger.warning("shutdown: events still not stored after %ss", seconds)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.ingestor.aclose()
        await self.rollups.aclose()
        await self.credentials.aclose()
        await self.hub.aclose()
        await self.liveness.aclose()
        await self.bus.aclose()
        await self.store.aclose()
        await self.decoder.aclose()
        await pool.shutdown()
        logger.info("%s runtime stopped: %d run(s) and %d job(s) interrupted", self.kind, interrupted, jobs)

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _sink(kind: str) -> Sink:
    """A server's writer process (``TRACE_WRITER_PROCESS``), unless its database is one another
    process cannot open (an in-memory SQLite); a command stores on a thread."""
    if kind == "server" and settings.TRACE_WRITER_PROCESS and not in_memory_database():
        return ProcessSink(ready_seconds=settings.TRACE_WRITER_START_SECONDS)
    return ThreadSink()


def _logged(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s failed: %r", task.get_name(), task.exception())


_runtimes: PerLoop[Runtime] = PerLoop(Runtime)


def get_runtime() -> Runtime:
    """The runtime of the running event loop (a server process has one)."""
    return _runtimes.get()


def all_loops_runtimes() -> list[tuple[asyncio.AbstractEventLoop, Runtime]]:
    """Every event loop's runtime in this process, with its loop (tests have a loop each)."""
    return list(_runtimes.instances.items())


def all_runtimes() -> list[Runtime]:
    return _runtimes.all()


def running_agents() -> int:
    return sum(len(runtime.runs) for runtime in all_runtimes())


class Lifecycle:
    """ASGI: the process's runtime starts with the server and stops with it (see the module docstring)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._tasks: set[asyncio.Task] = set()
        # Under daphne (Twisted's reactor is installed before the application is imported).
        if compat.on_server_start(self._start_under_daphne):
            compat.on_server_shutdown(self._stop)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        runtime = get_runtime()
        if not runtime.started:
            await runtime.start()  # a connection that came before the start-up finished
        await self.app(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        """uvicorn."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await get_runtime().start()
                except Exception as exc:  # noqa: BLE001 - the server is told, says why, and exits
                    logger.critical("tracesite cannot start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _start_under_daphne(self) -> None:
        task = asyncio.ensure_future(self._start_or_exit())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_or_exit(self) -> None:
        try:
            await get_runtime().start()
        except Exception as exc:  # noqa: BLE001 - a server that cannot store or render what it serves stops, saying why
            logger.critical("tracesite cannot start: %s", exc)
            logging.shutdown()
            os._exit(EXIT_START_FAILED)

    async def _stop(self) -> None:
        await get_runtime().stop()
