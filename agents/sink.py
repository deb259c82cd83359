"""The interface the agent reports through. It knows nothing of WebSockets or models."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Protocol

from traces import protocol
from traces.protocol import EventType


class TraceSink(Protocol):
    trace_id: uuid.UUID

    async def emit(self, event_type: EventType, data: dict[str, Any], timestamp: dt.datetime | None = None) -> None:
        """Record one trace event. May return before it is stored; raises if recording has failed."""
        ...


class ListSink:
    """Collects envelopes in memory: for tests and for running the agent without a database."""

    def __init__(self, trace_id: uuid.UUID | None = None, session_id: str = "") -> None:
        self.trace_id = trace_id or uuid.uuid4()
        self.session_id = session_id
        self.events: list[dict[str, Any]] = []

    async def emit(self, event_type: EventType, data: dict[str, Any], timestamp: dt.datetime | None = None) -> None:
        message = protocol.envelope(
            event_type, data, session_id=self.session_id, timestamp=timestamp,
            trace_id=self.trace_id, seq=len(self.events) + 1,
        )
        self.events.append(message)

    def of_type(self, event_type: EventType) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event_type"] == event_type]
