"""A recorded trace, emitted again: the agent stand-in for the emitter-only benchmarks.

``bench/trace.json`` is one run of the built-in model on "显示用户表的10条用户数据" (36 events,
about 1 KB each). ``ScriptedAgent`` emits the same events through whatever sink it is given,
with fresh trace and run ids, so a benchmark measures the live path (consumer, recorder, database,
channel layer, server), not the agent's own SQL work. The baselines send the same sequence.

    python bench/scripted.py          # re-record bench/trace.json with the built-in model
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import orjson

TRACE_FILE = Path(__file__).resolve().parent / "trace.json"
QUESTION = "显示用户表的10条用户数据"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def gap() -> float:
    """Seconds between events (BENCH_EVENT_GAP_MS): 0 emits back to back, more paces the run like an agent."""
    return float(os.environ.get("BENCH_EVENT_GAP_MS") or 0) / 1000


@cache
def recorded() -> list[tuple[str, dict[str, Any]]]:
    return [(event["event_type"], event["data"]) for event in json.loads(TRACE_FILE.read_text())]


@cache
def _template() -> tuple[list[str], list[str], str]:
    """The recorded events as one JSON text cut at every id: the pieces between ids, the ids in
    order, and the trace id."""
    events = recorded()
    text = json.dumps(events, ensure_ascii=False)
    return UUID_RE.split(text), UUID_RE.findall(text), events[0][1]["trace_id"]


def fresh_events(trace_id: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
    """The recorded events with the trace id replaced and every run id made new.

    The ids are put back between the template's pieces, then the whole is parsed once: the
    stand-in agent must cost next to nothing, or the benchmark measures it instead of the live path.
    """
    pieces, ids, first = _template()
    fresh = {first: str(trace_id)}
    for old in ids:
        if old not in fresh:
            fresh[old] = str(uuid.UUID(int=random.getrandbits(128), version=4))
    parts = [pieces[0]]
    for old, piece in zip(ids, pieces[1:], strict=True):
        parts.append(fresh[old])
        parts.append(piece)
    return [(kind, data) for kind, data in orjson.loads("".join(parts))]


async def _ignore(message: str) -> None:
    """The stand-in agent does not report its place in the queue."""


class ScriptedModel:
    name = "scripted"


class ScriptedAgent:
    """Quacks like ``agents.loop.Agent`` for ``traces.live.agent_runs.run_trace``."""

    name = "sql_agent"
    model = ScriptedModel()

    async def run(self, question: str, sink, metadata: dict[str, Any] | None = None, admission=None):
        from agents.events import EventType, TraceOutcome
        from agents.loop import AgentResult

        pause = gap()
        events = fresh_events(sink.trace_id)
        await sink.emit(EventType(events[0][0]), events[0][1])  # trace_started
        if admission is not None:
            await admission(_ignore)
        for kind, data in events[1:]:
            if pause and kind != "trace_started":
                await asyncio.sleep(pause)
            await sink.emit(EventType(kind), data)
        return AgentResult(TraceOutcome.SUCCESS, data.get("final_response", ""), stopped_by="answer")


def record() -> None:
    import asyncio
    import os
    import sys
    import tempfile

    sys.path.insert(0, str(TRACE_FILE.parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracesite.settings")
    import django

    django.setup()
    from agents import demo
    from agents.config import build_agent
    from agents.database import open_database
    from agents.events import to_json
    from agents.sink import ListSink
    from tracesite import env

    path = Path(tempfile.mkdtemp()) / "demo.sqlite3"
    import sqlite3

    with sqlite3.connect(path) as conn:
        demo.create(conn.cursor(), "sqlite", "?")
    sink = ListSink()
    asyncio.run(build_agent("builtin", database=open_database(env.sqlite_database(path))).run(QUESTION, sink))
    events = [{"event_type": e["event_type"], "seq": e["seq"], "data": e["data"]} for e in sink.events]
    TRACE_FILE.write_text(json.dumps(json.loads(to_json(events)), ensure_ascii=False, indent=1) + "\n")
    print(f"{len(sink.events)} events written to {TRACE_FILE}")


if __name__ == "__main__":
    record()
