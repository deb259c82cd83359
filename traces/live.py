"""Process-local state of the live service: agent runs by session, open sockets.

A run belongs to its session, not to a socket: closing the browser does not stop it. Each run
listens on the session's control group, so ``cancel_agent`` reaches it from any process.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings

from traces import protocol
from traces.access import SessionKey
from traces.layer import BestEffortLayer, live_layer
from traces.loops import PerLoop
from traces.metrics import RUNNING_AGENTS
from traces.runner import run_trace

logger = logging.getLogger(__name__)


@dataclass
class RunHandle:
    trace_id: uuid.UUID
    session: SessionKey
    task: asyncio.Task | None = None
    listener: asyncio.Task | None = None
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
            handle.listener = asyncio.create_task(self._listen_for_cancel(handle))
            RUNNING_AGENTS.inc()
            try:
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
                handle.listener.cancel()
                if self.runs.get(session) is handle:
                    del self.runs[session]
                handle.done.set()

        handle.task = asyncio.get_running_loop().create_task(run(), name=f"trace-{handle.trace_id}")
        return handle

    async def _listen_for_cancel(self, handle: RunHandle) -> None:
        """Cancel the run when its session asks, from whichever process (the session's control group).
        While the layer is down, cancel still works from this process; the group is joined again
        every TRACE_GROUP_REFRESH seconds, as sockets do."""
        layer = live_layer()
        if layer is None:
            return
        group = handle.session.control_group
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        refresher = asyncio.create_task(_keep_joined(layer, group, channel))
        try:
            while True:
                message = await layer.receive(channel)
                if message.get("type") == protocol.AGENT_CANCEL_MESSAGE and handle.task is not None:
                    handle.task.cancel()
        finally:
            refresher.cancel()
            await layer.group_discard(group, channel)
            layer.forget_channel(channel)

    def cancel_local(self, session: SessionKey) -> bool:
        handle = self.get(session)
        if handle is None or handle.task is None:
            return False
        handle.task.cancel()
        return True


async def _keep_joined(layer: BestEffortLayer, group: str, channel: str) -> None:
    while True:
        await asyncio.sleep(settings.TRACE_GROUP_REFRESH)
        await layer.group_add(group, channel)


@dataclass
class Sockets:
    connections: int = 0
    sessions: Counter = field(default_factory=Counter)


_runs: PerLoop[LiveRuns] = PerLoop(LiveRuns)
sockets = Sockets()


def live_runs() -> LiveRuns:
    return _runs.get()


def running_agents() -> int:
    return sum(len(runs) for runs in _runs.all())
