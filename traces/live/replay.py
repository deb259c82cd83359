"""Replaying a stored trace on a socket, at its original pace (``speed`` 1), faster, or at once (0)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from traces import protocol
from traces.live.delivery import Outbox, Reader
from traces.protocol import ServerEvent

CHUNK = 5000


async def replay(outbox: Outbox, read_events: Reader, trace_id: uuid.UUID, speed: float) -> None:
    """Queue the stored events with ``replay: true`` between ``replay_started`` and ``replay_completed``."""
    rows: list[tuple[int, Any, str, str]] = []
    while True:
        chunk = await read_events(trace_id, rows[-1][0] if rows else 0, None, CHUNK)
        rows.extend(chunk)
        if len(chunk) < CHUNK:
            break
    info = {"trace_id": str(trace_id), "speed": speed, "events": len(rows)}
    outbox.text(_message(outbox, ServerEvent.REPLAY_STARTED, info), ServerEvent.REPLAY_STARTED)
    started = time.monotonic()
    first = rows[0][1] if rows else None
    for _, timestamp, _, text in rows:
        if speed > 0 and first is not None:
            delay = (timestamp - first).total_seconds() / speed - (time.monotonic() - started)
            if delay > 0:
                await asyncio.sleep(delay)
        while outbox.queued > 500 and not outbox.dropped:  # at speed 0, at the client's pace
            await asyncio.sleep(0.01)
        outbox.text(protocol.mark_replay(text), "trace_event")
    outbox.text(_message(outbox, ServerEvent.REPLAY_COMPLETED, info), ServerEvent.REPLAY_COMPLETED)


def _message(outbox: Outbox, event_type: ServerEvent, data: dict[str, Any]) -> str:
    return protocol.dumps(protocol.envelope(event_type, data, session_id=outbox.session_id))
