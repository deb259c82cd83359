"""The ceiling: a bare ``websockets`` server sending pre-serialised messages, nothing else.

    python bench/baseline_websockets.py --port 8771

On ``start_agent`` it serialises the recorded trace once (orjson, timestamped now) and sends
the 36 messages back to back: no framework, no validation, no persistence, no channel layer.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
from websockets.asyncio.server import serve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.scripted import fresh_events, gap


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def handler(websocket) -> None:
    session_id = websocket.request.path.rsplit("/", 1)[-1]
    await websocket.send(
        orjson.dumps(
            {
                "event_type": "connection_established",
                "timestamp": now(),
                "message_id": "c",
                "session_id": session_id,
                "data": {"status": "connected"},
            }
        ).decode()
    )
    async for frame in websocket:
        if orjson.loads(frame).get("action") != "start_agent":
            continue
        trace_id, stamp, pause = uuid.uuid4(), now(), gap()
        events = list(enumerate(fresh_events(trace_id), start=1))
        if pause:  # paced: each message stamped when it is due, so latency means the same as elsewhere
            for seq, (kind, data) in events:
                await websocket.send(
                    orjson.dumps(
                        {
                            "event_type": kind,
                            "timestamp": now(),
                            "message_id": f"{kind}_{trace_id.hex}_{seq}",
                            "session_id": session_id,
                            "data": data,
                            "trace_id": str(trace_id),
                            "seq": seq,
                            "replay": False,
                        }
                    ).decode()
                )
                await asyncio.sleep(pause)
            continue
        messages = [
            orjson.dumps(
                {
                    "event_type": kind,
                    "timestamp": stamp,
                    "message_id": f"{kind}_{trace_id.hex}_{seq}",
                    "session_id": session_id,
                    "data": data,
                    "trace_id": str(trace_id),
                    "seq": seq,
                    "replay": False,
                }
            ).decode()
            for seq, (kind, data) in events
        ]
        for message in messages:
            await websocket.send(message)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, max_size=None, compression=None):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8771)
    asyncio.run(main(parser.parse_args().port))
