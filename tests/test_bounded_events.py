"""No event carries more than its caps: a result's long values and rows, the model's text, the
event as a whole are cut with a visible marker (and the original size), stored and delivered
like that, and the model is told its result was cut."""

from __future__ import annotations

import pytest

from agents.builtin import BuiltinModel
from agents.events import EventType, json_size
from agents.loop import Agent
from agents.sink import ListSink
from agents.tools import QueryTool, SchemaTool
from tests.agentdb import mysql_database, sqlite_database
from traces import protocol
from traces.access import SessionKey
from traces.live.agent_runs import run_trace
from traces.live.hub import Hub
from traces.models import Event, Run, Trace
from traces.store.recorder import EventStore, TraceRecorder


@pytest.fixture(params=["sqlite", "mysql"])
def notes(request, tmp_path):
    """40 rows of 60,000 characters each, on SQLite and MariaDB, with small caps."""
    caps = {"cell_chars": 500, "result_bytes": 8000}
    if request.param == "sqlite":
        yield sqlite_database(tmp_path / "notes.sqlite3", "notes", **caps)
        return
    with mysql_database(request.getfixturevalue("mysql_url"), "notes", **caps) as database:
        yield database


async def test_a_result_is_cut_to_its_caps_and_says_so(notes):
    result = await notes.run("SELECT * FROM notes")
    assert result.size_limited and result.truncated and result.cut_cells == len(result.rows)
    assert 1 <= len(result.rows) < 40
    body = result.rows[0][2]
    assert len(body) < 600 and body.endswith("[truncated: 60,002 characters in all]")
    assert json_size(result.rows) <= 8000 + 1000


async def test_the_model_reads_that_its_result_was_cut(notes):
    sink = ListSink()
    await Agent(BuiltinModel(), [SchemaTool(notes), QueryTool(notes)]).run("show 40 notes", sink)
    query = next(e["data"] for e in sink.of_type(EventType.TOOL_COMPLETED) if e["data"]["name"] == "run_sql")
    read_by_model = protocol.loads(query["outputs"]["output"])
    assert "cut" in read_by_model["note"] and "fit in the 8,000-byte result limit" in read_by_model["note"]
    assert query["outputs"]["cut_cells"] > 0 and query["outputs"]["truncated"] is True


@pytest.mark.django_db(transaction=True)
async def test_an_event_over_the_limit_is_stored_and_delivered_cut(settings):
    settings.TRACE_MAX_EVENT_BYTES = 64 * 1024
    hub = Hub()
    received = []

    class Socket:
        def offer(self, event):
            received.append(event)

        def offer_feed(self, event):
            pass

        def catch_up(self):
            pass

    store = EventStore(hub=hub)
    recorder = TraceRecorder(session=SessionKey("big"), store=store)
    hub.follow_trace(str(recorder.trace_id), Socket())
    await recorder.emit(EventType.TRACE_STARTED, {"trace_id": str(recorder.trace_id), "request": "q", "metadata": {}})
    huge = {
        "run_id": "8e1d2b7c-0d4e-4a5b-9c3f-2a1b0c9d8e7f", "trace_id": str(recorder.trace_id), "parent_run_id": None,
        "name": "think", "run_type": "think", "status": "success", "start_time": None, "end_time": None,
        "duration_ms": 5, "inputs": {"content": "question " * 200_000}, "outputs": {"content": "answer " * 300_000},
        "error": None, "error_type": None, "metadata": {},
    }  # fmt: skip
    await recorder.emit(EventType.THINK_COMPLETED, huge)
    await recorder.emit(
        EventType.TRACE_COMPLETED, {"trace_id": str(recorder.trace_id), "status": "success", "final_response": "ok"}
    )
    await store.aclose()

    stored = await Event.objects.aget(trace_id=recorder.trace_id, seq=2)
    assert len(stored.envelope.encode()) <= 64 * 1024
    data = protocol.loads(stored.envelope)["data"]
    assert data["truncated"]["original_bytes"] > 3_000_000 and data["truncated"]["limit_bytes"] <= 64 * 1024
    assert "[truncated: 2,100,000 characters in all]" in data["outputs"]["content"]
    assert received[1].text == stored.envelope  # delivered as stored
    run = await Run.objects.aget(trace_id=recorder.trace_id)
    assert len(run.outputs["content"]) < 64 * 1024  # the run row is projected from the cut event
    assert (await Trace.objects.aget(pk=recorder.trace_id)).status == "success"


@pytest.mark.django_db(transaction=True)
async def test_a_run_over_huge_values_finishes_and_is_stored_within_the_caps(notes):
    agent = Agent(BuiltinModel(), [SchemaTool(notes), QueryTool(notes)], max_text_chars=2000)
    result = await run_trace(
        "show 40 notes", session=SessionKey("notes"), source="cli", agent=agent, store=EventStore(hub=Hub())
    )
    assert result.status == "success"
    sizes = [
        len(text.encode())
        async for text in Event.objects.filter(trace__session_id="notes").values_list("envelope", flat=True)
    ]
    assert max(sizes) < 64 * 1024  # small caps, small events: no 200 MB tool_completed
