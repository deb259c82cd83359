"""Replaying a stored trace on a socket, at its original pace (``speed`` 1), faster, or at once (0)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from django.conf import settings

from traces import protocol
from traces.live.delivery import Outbox, Reader
from traces.protocol import ServerEvent

FIRST_CHUNK = 100  # events read first; then as many as make about TRACE_SEND_BUFFER_BYTES
MAX_CHUNK = 1000


async def replay(outbox: Outbox, read_events: Reader, trace_id: uuid.UUID, speed: float, events: int) -> None:
    """Queue the stored events with ``replay: true`` between ``replay_started`` and ``replay_completed``
    (``events``: how many the trace holds). Read a chunk at a time (about TRACE_SEND_BUFFER_BYTES of
    events) and queued only as fast as the client takes them (``Outbox.room_for_replay``): a client
    that does not read holds at most a chunk and the outbox's byte limit on the server, and is
    dropped as any slow client is."""
    info = {"trace_id": str(trace_id), "speed": speed, "events": events}
    outbox.text(_message(outbox, ServerEvent.REPLAY_STARTED, info), ServerEvent.REPLAY_STARTED)
    started = time.monotonic()
    first = None
    after = 0
    chunk = FIRST_CHUNK
    while not outbox.dropped:
        rows = await read_events(trace_id, after, None, chunk)
        for seq, timestamp, _, text in rows:
            after = seq
            if first is None:
                first = timestamp
            if speed > 0:
                delay = (timestamp - first).total_seconds() / speed - (time.monotonic() - started)
                if delay > 0:
                    await asyncio.sleep(delay)
            if not await outbox.room_for_replay():
                return  # the client is gone
            outbox.replayed(protocol.mark_replay(text))
        if len(rows) < chunk:
            break
        # A replay holds one chunk of rows: about the send buffer's worth, whatever its events' size.
        size = sum(len(row[3]) for row in rows) // len(rows) or 1
        chunk = max(10, min(MAX_CHUNK, settings.TRACE_SEND_BUFFER_BYTES // size))
    outbox.text(_message(outbox, ServerEvent.REPLAY_COMPLETED, info), ServerEvent.REPLAY_COMPLETED)


def _message(outbox: Outbox, event_type: ServerEvent, data: dict[str, Any]) -> str:
    return protocol.dumps(protocol.envelope(event_type, data, session_id=outbox.session_id))
