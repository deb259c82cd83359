"""This process's agent runs by session, and its open sockets.

A run belongs to its session, not to a socket: closing the browser does not stop it.
``cancel_agent`` reaches a run in another process through the bus (``traces.live.bus``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from django.conf import settings

from agents.events import interruption
from agents.loop import Admission
from traces.access import SessionKey
from traces.live.agent_runs import run_trace
from traces.metrics import RUNNING_AGENTS
from traces.store.event_store import EventStore

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class RunHandle:
    trace_id: uuid.UUID
    session: SessionKey
    task: asyncio.Task | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    turn: asyncio.Event = field(default_factory=asyncio.Event)  # set when it may start


class SessionRuns:
    """This process's agent runs by session. At most ``TRACE_MAX_CONCURRENT_RUNS`` run at once; the
    others wait in order (their trace is started and says it is queued, with its place), up to
    ``TRACE_MAX_QUEUED_RUNS`` of them."""

    def __init__(self, store: EventStore, runner: str) -> None:
        self.store = store
        self.runner = runner  # the process's runner id, recorded on each trace (traces.store.liveness)
        self.runs: dict[SessionKey, RunHandle] = {}
        self.running = 0
        self.waiting: collections.deque[tuple[RunHandle, Callable[[str], Awaitable[None]]]] = collections.deque()
        self._reports: set[asyncio.Task] = set()

    def get(self, session: SessionKey) -> RunHandle | None:
        return self.runs.get(session)

    def __len__(self) -> int:
        return len(self.runs)

    @property
    def full(self) -> bool:
        """No room to queue another run."""
        return (
            self.running >= settings.TRACE_MAX_CONCURRENT_RUNS and len(self.waiting) >= settings.TRACE_MAX_QUEUED_RUNS
        )

    def start(
        self,
        question: str,
        *,
        session: SessionKey,
        owner_id: int | None,
        model: str | None,
        max_steps: int | None,
        source: str,
        rerun_of: uuid.UUID | None = None,
    ) -> RunHandle:
        handle = RunHandle(uuid.uuid4(), session)
        self.runs[session] = handle

        async def run() -> None:
            RUNNING_AGENTS.inc()
            try:
                await run_trace(
                    question,
                    store=self.store,
                    runner=self.runner,
                    session=session,
                    source=source,
                    owner_id=owner_id,
                    model=model,
                    max_steps=max_steps,
                    trace_id=handle.trace_id,
                    rerun_of=rerun_of,
                    admission=lambda report: self._admit(handle, report),
                )
            except Exception:
                logger.exception("run crashed trace=%s", handle.trace_id)
            finally:
                RUNNING_AGENTS.dec()
                self._leave(handle)
                if self.runs.get(session) is handle:
                    del self.runs[session]
                handle.done.set()

        handle.task = asyncio.get_running_loop().create_task(run(), name=f"trace-{handle.trace_id}")
        return handle

    async def admitted(self, run: Callable[[Admission], Awaitable[T]]) -> T:
        """``run(admission)``, an agent run that is no session's own (an experiment's item): it
        waits for a slot among ``TRACE_MAX_CONCURRENT_RUNS`` in turn with the sessions' runs,
        saying so in its trace, and frees it when it ends."""
        handle = RunHandle(uuid.uuid4(), SessionKey(""))
        handle.task = asyncio.current_task()
        try:
            return await run(lambda report: self._admit(handle, report))
        finally:
            self._leave(handle)

    async def _admit(self, handle: RunHandle, report: Callable[[str], Awaitable[None]]) -> None:
        """Wait for a free slot, in order, saying where this run stands while it waits."""
        if self.running < settings.TRACE_MAX_CONCURRENT_RUNS and not self.waiting:
            self.running += 1
            handle.turn.set()
            return
        self.waiting.append((handle, report))
        await report(self._place(len(self.waiting)))
        await handle.turn.wait()  # _leave() of a finished run counts this one in

    def _place(self, place: int) -> str:
        ahead = "1 run" if place == 2 else f"{place - 1} runs"
        return (
            f"Queued: {ahead} ahead of this one; the server runs {settings.TRACE_MAX_CONCURRENT_RUNS} agents at a time"
            if place > 1
            else f"Queued: next to start; the server runs {settings.TRACE_MAX_CONCURRENT_RUNS} agents at a time"
        )

    def _leave(self, handle: RunHandle) -> None:
        """A run ended (or gave up waiting): its slot goes to the first waiting one, the others move up."""
        if handle.turn.is_set():
            self.running -= 1
        else:
            self.waiting = collections.deque(entry for entry in self.waiting if entry[0] is not handle)
        while self.waiting and self.running < settings.TRACE_MAX_CONCURRENT_RUNS:
            admitted, _ = self.waiting.popleft()
            self.running += 1
            admitted.turn.set()
            for place, (waiting, report) in enumerate(self.waiting, start=1):
                if waiting.task is not None:
                    self._report_later(waiting, report, self._place(place))

    def _report_later(self, handle: RunHandle, report: Callable[[str], Awaitable[None]], message: str) -> None:
        async def tell() -> None:
            if not handle.turn.is_set():
                await report(message)

        task = asyncio.get_running_loop().create_task(tell())
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    def retry_after(self) -> int:
        """A guess, in seconds, of when a queued run might have room: for server_busy's retry hint."""
        return 30

    def cancel_local(self, session: SessionKey) -> bool:
        handle = self.get(session)
        if handle is None or handle.task is None:
            return False
        handle.task.cancel()
        return True

    async def interrupt_all(self, seconds: float) -> int:
        """Cancel every run as interrupted (the process is stopping) and wait up to ``seconds``
        for them to record how they ended; returns how many there were."""
        handles = list(self.runs.values())
        for handle in handles:
            if handle.task is not None:
                handle.task.cancel(interruption("the server is shutting down"))
        try:
            async with asyncio.timeout(seconds):
                await asyncio.gather(*(handle.done.wait() for handle in handles))
        except TimeoutError:
            logger.warning(
                "shutdown: %d run(s) not recorded as ended in %ss", sum(not h.done.is_set() for h in handles), seconds
            )
        reports = list(self._reports)
        for report in reports:
            report.cancel()
        await asyncio.gather(*reports, return_exceptions=True)
        return len(handles)


@dataclass
class Sockets:
    """This process's open sockets: in all, by session id, and by user (``TRACE_MAX_SOCKETS_PER_USER``)."""

    connections: int = 0
    sessions: Counter = field(default_factory=Counter)
    users: Counter = field(default_factory=Counter)


sockets = Sockets()
