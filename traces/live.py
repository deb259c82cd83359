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

from channels.layers import get_channel_layer

from traces import protocol
from traces.loops import PerLoop, raise_if_cancelled
from traces.metrics import RUNNING_AGENTS
from traces.runner import run_trace

logger = logging.getLogger(__name__)


@dataclass
class RunHandle:
    trace_id: uuid.UUID
    session_id: str
    group_user: int | None
    task: asyncio.Task | None = None
    listener: asyncio.Task | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class LiveRuns:
    def __init__(self) -> None:
        self.runs: dict[tuple[str, int | None], RunHandle] = {}

    def get(self, session_id: str, group_user: int | None) -> RunHandle | None:
        return self.runs.get((session_id, group_user))

    def __len__(self) -> int:
        return len(self.runs)

    def start(self, question: str, *, session_id: str, group_user: int | None, user_id: int | None, model: str | None,
              max_steps: int | None, source: str, rerun_of: uuid.UUID | None = None) -> RunHandle:
        handle = RunHandle(uuid.uuid4(), session_id, group_user)
        key = (session_id, group_user)
        self.runs[key] = handle

        async def run() -> None:
            handle.listener = asyncio.create_task(self._listen_for_cancel(handle))
            RUNNING_AGENTS.inc()
            try:
                await run_trace(question, session_id=session_id, source=source, user_id=user_id, model=model,
                                max_steps=max_steps, trace_id=handle.trace_id, rerun_of=rerun_of)
            except Exception:
                logger.exception("run crashed trace=%s", handle.trace_id)
            finally:
                RUNNING_AGENTS.dec()
                handle.listener.cancel()
                if self.runs.get(key) is handle:
                    del self.runs[key]
                handle.done.set()

        handle.task = asyncio.get_running_loop().create_task(run(), name=f"trace-{handle.trace_id}")
        return handle

    async def _listen_for_cancel(self, handle: RunHandle) -> None:
        layer = get_channel_layer()
        group = protocol.control_group(handle.session_id, handle.group_user)
        try:
            channel = await layer.new_channel()
            await layer.group_add(group, channel)
        except Exception as exc:  # no layer: cancel still works from this process
            logger.warning("cancel listener unavailable for trace=%s: %r", handle.trace_id, exc)
            return
        try:
            while True:
                try:
                    message = await layer.receive(channel)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    raise_if_cancelled()
                    await asyncio.sleep(1)  # the layer is down; try again
                    continue
                if message.get("type") == protocol.AGENT_CANCEL_MESSAGE and handle.task is not None:
                    handle.task.cancel()
        finally:
            try:
                await layer.group_discard(group, channel)
            except Exception:
                pass

    def cancel_local(self, session_id: str, group_user: int | None) -> bool:
        handle = self.get(session_id, group_user)
        if handle is None or handle.task is None:
            return False
        handle.task.cancel()
        return True


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
