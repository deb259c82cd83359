"""The projection: a trace's rows as a pure function of its events, the one place they are computed."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from agents.events import EventType, format_timestamp
from tests.factories import run_fields
from traces.store.projection import PROGRESS_FIELDS, new_trace, project

T0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
TRACE_ID = uuid.UUID("8b0c9a0e-0000-4000-8000-000000000001")


def replay(events: list[tuple[EventType, dict]]) -> tuple[dict, dict]:
    """The rows after ``events``, projected one after another as the writer does."""
    trace = new_trace({"id": TRACE_ID, "started_at": T0})
    runs: dict = {}
    for seq, (kind, data) in enumerate(events, start=1):
        projected = project(trace, runs, kind, data, T0 + dt.timedelta(seconds=seq), seq)
        trace = projected.trace
        runs = {**runs, **projected.runs}
    return trace, runs


def think(run_id: uuid.UUID, prompt: int, completion: int, cost: float = 0.0, **extra) -> dict:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return run_fields(TRACE_ID, run_id, "think", "think", "success", token_usage=usage, cost=cost, **extra)


def started(**metadata) -> tuple[EventType, dict]:
    data = {"trace_id": str(TRACE_ID), "trace_name": "x_execution", "request": "q", "agent_name": "x",
            "max_steps": 5, "metadata": {"model": "m", **metadata}}  # fmt: skip
    return EventType.TRACE_STARTED, data


def test_it_never_changes_its_inputs():
    trace = new_trace({"id": TRACE_ID, "started_at": T0})
    before = dict(trace)
    runs: dict = {}
    projected = project(trace, runs, EventType.THINK_COMPLETED, think(uuid.uuid4(), 10, 5, 0.5), T0, 1)
    assert trace == before and runs == {}
    assert projected.trace["total_tokens"] == 15 and projected.trace["last_seq"] == 1


def test_the_trace_totals_are_the_sums_of_its_runs():
    a, b = uuid.uuid4(), uuid.uuid4()
    trace, runs = replay(
        [
            started(),
            (EventType.THINK_COMPLETED, think(a, 100, 20, 0.001)),
            (EventType.THINK_COMPLETED, think(b, 50, 5, 0.0005)),
            (EventType.THINK_COMPLETED, think(a, 100, 20, 0.001)),  # the same run again: not counted twice
        ]
    )
    assert (trace["prompt_tokens"], trace["completion_tokens"], trace["total_tokens"]) == (150, 25, 175)
    assert trace["total_cost"] == Decimal("0.0015") and trace["total_runs"] == 2
    assert sum(r["total_tokens"] for r in runs.values()) == trace["total_tokens"]
    assert sum(r["cost"] for r in runs.values()) == trace["total_cost"]


def test_trace_completed_keeps_the_rows_totals_not_its_own():
    trace, _ = replay(
        [
            started(),
            (EventType.THINK_COMPLETED, think(uuid.uuid4(), 100, 20, 0.25)),
            (EventType.TRACE_COMPLETED, {"trace_id": str(TRACE_ID), "status": "success", "total_tokens": 0,
                                         "total_cost": 0, "total_runs": 0, "final_response": "ok"}),
        ]
    )  # fmt: skip
    assert (trace["total_tokens"], trace["total_cost"], trace["total_runs"]) == (120, Decimal("0.25"), 1)
    assert trace["status"] == "success" and trace["final_response"] == "ok"


def test_a_finished_trace_closes_the_runs_still_open():
    step, tool = uuid.uuid4(), uuid.uuid4()
    _, runs = replay(
        [
            started(),
            (EventType.STEP_STARTED, run_fields(TRACE_ID, step, "step_1", "agent", "running")),
            (EventType.TOOL_STARTED, run_fields(TRACE_ID, tool, "run_sql", "tool", "running", step)),
            (EventType.TRACE_COMPLETED, {"trace_id": str(TRACE_ID), "status": "error", "error": "interrupted: x",
                                         "error_type": "Interrupted", "final_response": ""}),
        ]
    )  # fmt: skip
    assert {r["status"] for r in runs.values()} == {"error"}
    assert runs[tool]["error_type"] == "Interrupted" and runs[tool]["end_time"] == T0 + dt.timedelta(seconds=4)


def test_a_placeholder_run_does_not_count_until_its_span_fills_it():
    parent = uuid.uuid4()
    trace, _ = replay(
        [started(), (EventType.STEP_STARTED, run_fields(TRACE_ID, parent, "(waiting)", "agent", "running",
                                                        metadata={"placeholder": True}))]
    )  # fmt: skip
    assert trace["total_runs"] == 0
    trace, _ = replay(
        [
            started(),
            (EventType.STEP_STARTED, run_fields(TRACE_ID, parent, "(waiting)", "agent", "running",
                                                metadata={"placeholder": True})),
            (EventType.RUN_COMPLETED, run_fields(TRACE_ID, parent, "invoke_agent", "agent", "success")),
        ]
    )  # fmt: skip
    assert trace["total_runs"] == 1


def test_started_and_completed_are_the_only_events_that_move_more_than_progress():
    events = [
        started(),
        (EventType.STEP_STARTED, run_fields(TRACE_ID, uuid.uuid4(), "step_1", "agent", "running")),
        (EventType.THINK_DELTA, {"run_id": str(uuid.uuid4()), "delta": "x"}),
        (EventType.THINK_COMPLETED, think(uuid.uuid4(), 1, 1, 0.1)),
        (EventType.STATUS_UPDATE, {"current_step": 1}),
        (EventType.PROGRESS_UPDATE, {"current_step": 1, "total_steps": 5}),
        (EventType.TRACE_COMPLETED, {"trace_id": str(TRACE_ID), "status": "success", "final_response": "ok"}),
    ]
    trace = new_trace({"id": TRACE_ID, "started_at": T0})
    runs: dict = {}
    for seq, (kind, data) in enumerate(events, start=1):
        projected = project(trace, runs, kind, data, T0, seq)
        moved = {name for name in projected.trace if projected.trace[name] != trace.get(name)}
        assert projected.whole == (kind in (EventType.TRACE_STARTED, EventType.TRACE_COMPLETED))
        if not projected.whole:
            assert moved <= set(PROGRESS_FIELDS), (kind, moved - set(PROGRESS_FIELDS))
        trace, runs = projected.trace, {**runs, **projected.runs}


usages = st.tuples(st.integers(0, 10_000), st.integers(0, 10_000), st.sampled_from([0, 0.5, 0.00000001, 1e-9, 3]))


@given(st.lists(st.tuples(st.integers(0, 5), usages), max_size=30))
def test_whatever_the_order_and_repeats_the_totals_match_the_runs(calls):
    """Run events in any order, repeated or revised: the trace's totals stay the sums of its runs."""
    ids = [uuid.UUID(int=i + 1) for i in range(6)]
    events = [started()]
    for which, (prompt, completion, cost) in calls:
        events.append((EventType.THINK_COMPLETED, think(ids[which], prompt, completion, cost)))
    trace, runs = replay(events)
    assert trace["total_tokens"] == sum(r["total_tokens"] for r in runs.values())
    assert trace["prompt_tokens"] == sum(r["prompt_tokens"] for r in runs.values())
    assert trace["total_cost"] == sum((r["cost"] for r in runs.values()), Decimal(0))
    assert trace["total_runs"] == len(runs)


def test_run_times_are_read_from_the_events_text_or_kept():
    run = uuid.uuid4()
    start = format_timestamp(T0 - dt.timedelta(seconds=30))
    _, runs = replay(
        [
            (EventType.TOOL_STARTED, run_fields(TRACE_ID, run, "t", "tool", "running", start_time=start)),
            (EventType.TOOL_COMPLETED, run_fields(TRACE_ID, run, "t", "tool", "success", start_time=None)),
        ]
    )
    assert runs[run]["start_time"] == T0 - dt.timedelta(seconds=30)  # the start it had, when the end says none


def test_a_finished_runs_slim_row_projects_as_its_whole_row_does():
    """A writer keeps only what the projection reads of a finished run; the next event of that run
    gives the same rows either way."""
    from traces.store.projection import slim

    run = uuid.uuid4()
    trace, runs = replay([started(), (EventType.THINK_COMPLETED, think(run, 100, 20, 0.25, inputs={"content": "q"}))])
    again = (EventType.THINK_COMPLETED, think(run, 10, 2, 0.01, start_time=None))
    whole = project(trace, runs, *again, T0, 3)
    slimmed = project(trace, {run: slim(runs[run])}, *again, T0, 3)
    assert whole.trace == slimmed.trace
    assert whole.runs == slimmed.runs
    assert (whole.trace["total_tokens"], whole.trace["total_cost"]) == (12, Decimal("0.01"))
