"""Baseline: the original guide's design, FastAPI + uvicorn, no persistence.

    uvicorn bench.baseline_fastapi:app --port 8770 --log-level warning

Connections live in a dict keyed by session, every message is a pydantic model serialised per
send, and ``start_agent`` emits the same recorded trace as ``bench/emitter.py`` (nothing stored).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

from bench.scripted import fresh_events, gap


class WebSocketMessage(BaseModel):
    event_type: str
    timestamp: str
    message_id: str
    session_id: str
    data: dict[str, Any]
    trace_id: str | None = None
    seq: int | None = None
    replay: bool = False


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class ConnectionManager:
    def __init__(self) -> None:
        self.active_connections: dict[str, WebSocket] = {}

    async def connect(self, websocket: WebSocket, session_id: str) -> None:
        await websocket.accept()
        self.active_connections[session_id] = websocket

    def disconnect(self, session_id: str) -> None:
        self.active_connections.pop(session_id, None)

    async def send_message(self, session_id: str, message: WebSocketMessage) -> None:
        websocket = self.active_connections.get(session_id)
        if websocket is not None:
            await websocket.send_text(message.model_dump_json())


manager = ConnectionManager()
app = FastAPI()


async def run_agent(session_id: str) -> None:
    trace_id, pause = uuid.uuid4(), gap()
    for seq, (kind, data) in enumerate(fresh_events(trace_id), start=1):
        await manager.send_message(
            session_id,
            WebSocketMessage(
                event_type=kind,
                timestamp=now(),
                message_id=f"{kind}_{trace_id.hex}_{seq}",
                session_id=session_id,
                data=data,
                trace_id=str(trace_id),
                seq=seq,
            ),
        )
        if pause:
            await asyncio.sleep(pause)


@app.websocket("/ws/{session_id}")
async def websocket_endpoint(websocket: WebSocket, session_id: str) -> None:
    await manager.connect(websocket, session_id)
    await manager.send_message(
        session_id,
        WebSocketMessage(
            event_type="connection_established",
            timestamp=now(),
            message_id=f"connection_established_{uuid.uuid4().hex[:12]}",
            session_id=session_id,
            data={"status": "connected", "session_id": session_id},
        ),
    )
    tasks: set[asyncio.Task] = set()
    try:
        while True:
            message = await websocket.receive_json()
            if message.get("action") == "start_agent":
                task = asyncio.create_task(run_agent(session_id))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    except WebSocketDisconnect:
        manager.disconnect(session_id)
