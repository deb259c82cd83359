"""One agent run, end to end: the agent reports to a recorder, which stores and publishes.

Used by the WebSocket consumer (``traces.live.sessions``) and by ``manage.py runagent``; both get
the same stored trace.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from django.db import DatabaseError

from agents.config import build_agent
from agents.events import EventData, EventType, StopReason, TraceOutcome, trace_failed
from agents.loop import Admission, Agent, AgentResult
from traces import protocol
from traces.access import SessionKey
from traces.models import Trace
from traces.store.event_store import EventStore, TraceConflict, TraceStoreError
from traces.store.pool import pooled
from traces.store.recorder import TraceRecorder

logger = logging.getLogger(__name__)

Listener = Callable[[dict[str, Any]], Awaitable[None] | None]


class ObservedRecorder(TraceRecorder):
    """A recorder that also hands each stored envelope to a local listener (the terminal view)."""

    def __init__(self, listener: Listener | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.listener = listener

    async def emit(self, event_type: EventType, data: EventData, timestamp: dt.datetime | None = None) -> None:
        if self.listener is None:
            await super().emit(event_type, data, timestamp)
            return
        future = await self.submit(event_type, data, timestamp)
        if self.listener is not None:
            # The listener is shown only what is stored: wait for this event's batch.
            _, text = await future
            try:
                result = self.listener(protocol.loads(text))
                if asyncio.iscoroutine(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - a closed terminal must not fail the recorded run
                logger.warning("trace listener failed and was detached: %r", exc)
                self.listener = None


@pooled
def _still_running(trace_id: uuid.UUID) -> bool:
    try:
        return Trace.objects.running().filter(pk=trace_id).exists()
    except DatabaseError:
        return True  # the database is still away: keep trying


FINALIZE_ATTEMPTS = 60
FINALIZE_INTERVAL = 5.0


async def close_when_writable(recorder: TraceRecorder, error: str) -> bool:
    """Retry recording the end of a trace whose database went away mid-run."""
    for _ in range(FINALIZE_ATTEMPTS):
        if not await _still_running(recorder.trace_id):
            return True  # closed meanwhile (by the reaper of another process)
        await recorder.reset_failure()
        try:
            await recorder.emit(
                EventType.TRACE_COMPLETED, trace_failed(str(recorder.trace_id), error, "TraceStoreError")
            )
            logger.warning("trace=%s recorded as failed after the history database came back", recorder.trace_id)
            return True
        except TraceConflict:
            return True  # another process (a reaper) wrote its end meanwhile
        except TraceStoreError:
            await asyncio.sleep(FINALIZE_INTERVAL)
    logger.error("trace=%s could not be recorded as failed; it stays 'running' in the history", recorder.trace_id)
    return False


async def run_trace(
    question: str,
    *,
    store: EventStore,
    session: SessionKey,
    source: str,
    runner: str = "",
    owner_id: int | None = None,
    model: str | None = None,
    max_steps: int | None = None,
    trace_id: uuid.UUID | None = None,
    rerun_of: uuid.UUID | None = None,
    agent: Agent | None = None,
    listener: Listener | None = None,
    admission: Admission | None = None,
) -> AgentResult:
    """Run the agent on ``question`` and record the trace. Never raises for agent failures.

    ``runner`` is the process's runner id (``traces.store.liveness``): if the process dies, its
    reaper-to-be knows the trace was interrupted."""
    recorder = ObservedRecorder(
        listener,
        store=store,
        trace_id=trace_id,
        session=session,
        source=source,
        owner_id=owner_id,
        rerun_of=rerun_of,
        runner=runner,
    )
    agent = agent or build_agent(model, max_steps)
    logger.info(
        "run started trace=%s session=%s source=%s model=%s",
        recorder.trace_id,
        session.session_id,
        source,
        agent.model.name,
    )
    try:
        result = await agent.run(question, recorder, admission=admission)
        await recorder.flush()
    except TraceStoreError as exc:
        # The history database went away and the agent could not even record its failure:
        # record it as soon as the database is back, so it is never left looking like it runs.
        # (If this process stops first, another process's reaper closes it.)
        logger.error("run aborted trace=%s: %s", recorder.trace_id, exc)
        await close_when_writable(recorder, str(exc))
        return AgentResult(TraceOutcome.ERROR, "", str(exc), "TraceStoreError", stopped_by=StopReason.ERROR)
    logger.info(
        "run finished trace=%s session=%s status=%s steps=%s tokens=%s",
        recorder.trace_id,
        session.session_id,
        result.status,
        result.steps,
        result.total_tokens,
    )
    return result
