"""The interface the agent reports through. It knows nothing of WebSockets or models."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Protocol

from agents.events import EventData, EventType, utcnow


class TraceSink(Protocol):
    trace_id: uuid.UUID

    async def emit(self, event_type: EventType, data: EventData, timestamp: dt.datetime | None = None) -> None:
        """Record one trace event. May return before it is stored; raises if recording has failed."""
        ...


class ListSink:
    """Collects events in memory, numbered like stored ones: for tests and for running the agent alone."""

    def __init__(self, trace_id: uuid.UUID | None = None) -> None:
        self.trace_id = trace_id or uuid.uuid4()
        self.events: list[dict[str, Any]] = []

    async def emit(self, event_type: EventType, data: EventData, timestamp: dt.datetime | None = None) -> None:
        self.events.append(
            {"event_type": event_type, "seq": len(self.events) + 1, "timestamp": timestamp or utcnow(), "data": data}
        )

    def of_type(self, event_type: EventType) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event_type"] == event_type]
