"""Process-local state of the live service: agent runs by session, open sockets.

A run belongs to its session, not to a socket: closing the browser does not stop it.
``cancel_agent`` reaches a run in another process through the bus (``traces.bus``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field

from agents.events import interruption
from traces.access import SessionKey
from traces.bus import get_bus
from traces.loops import PerLoop
from traces.metrics import RUNNING_AGENTS
from traces.runner import run_trace

logger = logging.getLogger(__name__)


@dataclass
class RunHandle:
    trace_id: uuid.UUID
    session: SessionKey
    task: asyncio.Task | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class LiveRuns:
    def __init__(self) -> None:
        self.runs: dict[SessionKey, RunHandle] = {}

    def get(self, session: SessionKey) -> RunHandle | None:
        return self.runs.get(session)

    def __len__(self) -> int:
        return len(self.runs)

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
                await get_bus().start()  # so that a cancel from another process reaches this one
                await run_trace(
                    question,
                    session=session,
                    source=source,
                    owner_id=owner_id,
                    model=model,
                    max_steps=max_steps,
                    trace_id=handle.trace_id,
                    rerun_of=rerun_of,
                )
            except Exception:
                logger.exception("run crashed trace=%s", handle.trace_id)
            finally:
                RUNNING_AGENTS.dec()
                if self.runs.get(session) is handle:
                    del self.runs[session]
                handle.done.set()

        handle.task = asyncio.get_running_loop().create_task(run(), name=f"trace-{handle.trace_id}")
        return handle

    def cancel_local(self, session: SessionKey) -> bool:
        handle = self.get(session)
        if handle is None or handle.task is None:
            return False
        handle.task.cancel()
        return True


@dataclass
class Sockets:
    connections: int = 0
    sessions: Counter = field(default_factory=Counter)


def _live_runs() -> LiveRuns:
    runs = LiveRuns()
    get_bus().on_cancel = runs.cancel_local  # a cancel_agent sent from another process
    return runs


_runs: PerLoop[LiveRuns] = PerLoop(_live_runs)
sockets = Sockets()


def live_runs() -> LiveRuns:
    return _runs.get()


def running_agents() -> int:
    return sum(len(runs) for runs in _runs.all())


SHUTDOWN_SECONDS = 10.0
_draining: set[asyncio.AbstractEventLoop] = set()


async def serve() -> None:
    """This process serves sockets: it beats as a runner, reaps interrupted runs, and drains on
    shutdown (once per process; cheap after the first call)."""
    from traces import compat
    from traces.runners import get_runners

    await get_runners().start("server")
    loop = asyncio.get_running_loop()
    if loop not in _draining:
        _draining.add(loop)
        compat.on_server_shutdown(shutdown)


async def shutdown(seconds: float = SHUTDOWN_SECONDS) -> None:
    """Stop cleanly: the runs of this process end as interrupted and are recorded, everything stored
    is delivered, the process stops beating and leaves the bus. What does not finish in ``seconds``
    is closed by the reaper of another process (this one no longer counts as alive)."""
    from traces.recorder import get_event_store
    from traces.runners import get_runners

    runs = live_runs()
    handles = list(runs.runs.values())
    for handle in handles:
        if handle.task is not None:
            handle.task.cancel(interruption("the server is shutting down"))
    try:
        async with asyncio.timeout(seconds):
            await asyncio.gather(*(handle.done.wait() for handle in handles))
            await get_event_store().drain()
    except TimeoutError:
        logger.warning(
            "shutdown: %d run(s) not recorded as ended in %ss", sum(not h.done.is_set() for h in handles), seconds
        )
    await get_runners().aclose()
    await get_bus().aclose()
    logger.info("shut down: %d run(s) interrupted", len(handles))
