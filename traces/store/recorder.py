"""The recorder: the ``TraceSink`` the agent reports to, and how anything else adds to a trace.

``emit()`` hands an event to the process's ``EventStore`` and returns without waiting for the
database, so the agent is not slowed by it. A trace may have up to ``MAX_IN_FLIGHT`` events queued
or being written; ``trace_completed`` waits until everything before it is stored, so a finished
run is a stored run. If an event cannot be stored, it and every later event of the trace are
refused (nothing is delivered and the stored trace has no holes), and the trace's next ``emit()``
raises the failure (a ``TraceStoreError``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

from agents.events import EventData, EventType, utcnow
from traces import protocol
from traces.access import SessionKey
from traces.models import Trace
from traces.store.event_store import MAX_IN_FLIGHT, EventStore, Pending, TraceStoreError


def _retrieved(future: asyncio.Future) -> None:
    """A refused event's future whose caller does not await it is not reported as unhandled."""
    if not future.cancelled():
        future.exception()


class TraceRecorder:
    """Adds events to one trace: a new one, or (``last_seq``) one stored up to that seq already."""

    def __init__(
        self,
        store: EventStore,
        *,
        trace_id: uuid.UUID | None = None,
        session: SessionKey | None = None,
        source: str = Trace.Source.WEBSOCKET,
        owner_id: int | None = None,
        rerun_of: uuid.UUID | None = None,
        runner: str = "",
        last_seq: int = 0,
    ) -> None:
        self.trace_id = trace_id or uuid.uuid4()
        self.session = session = session or SessionKey("")
        self.store = store
        origin = {
            "id": self.trace_id,
            "session_id": session.session_id,
            "source": source,
            "owner_id": owner_id,
            "runner": runner,
            "rerun_of_id": rerun_of,
            "started_at": utcnow(),
        }
        self.sequence = store.sequence(self.trace_id, session, owner_id, origin, last_seq)

    @property
    def owner_id(self) -> int | None:
        return self.sequence.owner_id

    @property
    def last_seq(self) -> int:
        """The seq of the trace's last stored event."""
        return self.sequence.committed

    @property
    def failure(self) -> TraceStoreError | None:
        """Why an event of this trace was refused, until ``reset_failure()``."""
        return self.sequence.error

    async def emit(self, event_type: EventType, data: EventData, timestamp: dt.datetime | None = None) -> None:
        """Queue the event; it is stored, then delivered, shortly after. See the module docstring."""
        await self._queue(event_type, data, timestamp, None, wait_at_end=True)

    async def submit(
        self,
        event_type: EventType,
        data: EventData,
        timestamp: dt.datetime | None = None,
        *,
        wait_at_end: bool = True,
    ) -> asyncio.Future:
        """Queue the event; returns a future of ``(seq, envelope text)`` that resolves once it is stored.

        A trace's ``trace_completed`` waits until everything is stored, unless ``wait_at_end`` is
        off (a caller that ends many traces and flushes them together). Raises
        ``TraceStoreError`` if an earlier event of this trace could not be stored.
        """
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieved)
        await self._queue(event_type, data, timestamp, future, wait_at_end=wait_at_end)
        return future

    async def _queue(
        self,
        event_type: EventType,
        data: EventData,
        timestamp: dt.datetime | None,
        future: asyncio.Future | None,
        *,
        wait_at_end: bool,
    ) -> None:
        if event_type not in protocol.TRACE_EVENTS:
            raise ValueError(f"{event_type} is not a trace event")
        sequence = self.sequence
        if sequence.error is not None:
            raise sequence.error
        sequence.submitted += 1
        await self.store.submit(Pending(sequence, event_type, data, timestamp or utcnow(), future))
        if event_type == EventType.TRACE_COMPLETED and wait_at_end:
            await self.flush()
        elif sequence.submitted - sequence.settled >= MAX_IN_FLIGHT:
            await sequence.settled_up_to(sequence.submitted - MAX_IN_FLIGHT + 1)

    async def flush(self) -> None:
        """Wait until every event emitted so far is stored; raises ``TraceStoreError`` if one was not."""
        await self.sequence.settled_up_to(self.sequence.submitted)
        if self.sequence.error is not None:
            raise self.sequence.error

    async def reset_failure(self) -> None:
        """Accept events again after a failure (to record how the trace ended once the database is
        back), once everything queued before it has been refused: the stored trace keeps no holes."""
        await self.sequence.settled_up_to(self.sequence.submitted)
        self.sequence.error = None
        self.sequence.failed = False
