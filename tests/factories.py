"""Sample traces for tests: real rows, as the store writes them; datasets and experiments over them."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from django.utils import timezone

from agents.events import EventType, format_timestamp, utcnow
from evals.models import Dataset, DatasetItem, Experiment, ExperimentItem
from traces import protocol
from traces.models import Trace
from traces.store.writer import Numbered, store_now


def make_trace(
    request: str = "显示用户表的10条用户数据", *, status: str = Trace.Status.SUCCESS, runs: int = 2, **fields
) -> Trace:
    """A trace stored as the store stores an agent's: its events, and rows projected from them. A
    step with ``runs`` tool calls under it, 120 tokens (on the step's end) and ``total_cost``;
    ``status`` running leaves it without its end."""
    started = fields.pop("started_at", timezone.now() - dt.timedelta(seconds=5))
    trace_id = fields.pop("id", None) or uuid.uuid4()
    model = fields.pop("model", "builtin")
    metadata = {"model": model, **fields.pop("metadata", {})}
    cost = fields.pop("total_cost", 0)
    final_response = fields.pop("final_response", "Here are the rows.")
    error = fields.pop("error", "")
    origin = {"started_at": started, "session_id": fields.pop("session_id", "s")}
    if "owner" in fields:
        owner = fields.pop("owner")
        origin["owner_id"] = owner.pk if owner is not None else None
    if "rerun_of" in fields:
        original = fields.pop("rerun_of")
        origin["rerun_of_id"] = original.pk if original is not None else None
    for name in ("source", "runner", "feedback", "feedback_comment"):
        if name in fields:
            origin[name] = fields.pop(name)
    assert not fields, f"make_trace cannot set {sorted(fields)}"

    events: list[tuple] = []
    step_id = uuid.uuid4()
    at = started

    def add(kind: EventType, data: dict, moment: dt.datetime) -> None:
        events.append((kind, data, moment))

    add(
        EventType.TRACE_STARTED,
        {
            "trace_id": str(trace_id),
            "trace_name": "sql_agent_execution",
            "request": request,
            "agent_name": "sql_agent",
            "max_steps": 10,
            "metadata": metadata,
        },
        at,
    )
    add(EventType.STEP_STARTED, run_fields(trace_id, step_id, "step_1", "agent", "running", start=at), at)
    for i in range(runs):
        tool_id = uuid.uuid4()
        add(EventType.TOOL_STARTED, run_fields(trace_id, tool_id, f"run_{i}", "tool", "running", step_id, start=at), at)
        add(
            EventType.TOOL_COMPLETED,
            run_fields(trace_id, tool_id, f"run_{i}", "tool", "success", step_id, start=at),
            at,
        )
    usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    step_end = run_fields(
        trace_id, step_id, "step_1", "agent", "success", start=at, token_usage=usage, cost=float(cost)
    )
    add(EventType.RUN_COMPLETED, step_end, at)
    ended = started + dt.timedelta(seconds=2)
    if status != Trace.Status.RUNNING:
        completed = {
            "trace_id": str(trace_id),
            "duration_ms": 2000,
            "total_runs": 1 + runs,
            "status": status,
            "total_cost": float(cost),
            "total_tokens": 120,
            "final_response": final_response,
        }
        if error:
            completed.update(error=error, error_type="Error")
        add(EventType.TRACE_COMPLETED, completed, ended)
    numbered = []
    for seq, (kind, data, moment) in enumerate(events, start=1):
        message = protocol.envelope(
            kind, data, session_id=origin["session_id"], timestamp=moment, trace_id=trace_id, seq=seq
        )
        numbered.append(Numbered(trace_id, seq, kind, moment, message["message_id"], protocol.dumps(message), data))
    outcome = store_now(numbered, {trace_id: origin})
    assert not outcome.failed, outcome.failed
    return Trace.objects.get(pk=trace_id)


def run_fields(
    trace_id: uuid.UUID,
    run_id: uuid.UUID,
    name: str,
    run_type: str,
    status: str,
    parent: uuid.UUID | None = None,
    *,
    start: dt.datetime | None = None,
    **extra,
) -> dict:
    now = format_timestamp(start or utcnow())
    fields = {
        "run_id": str(run_id),
        "trace_id": str(trace_id),
        "parent_run_id": str(parent) if parent else None,
        "name": name,
        "run_type": run_type,
        "status": status,
        "start_time": now,
        "end_time": None if status == "running" else now,
        "duration_ms": None if status == "running" else 1,
        "inputs": {},
        "outputs": {},
        "error": None,
        "error_type": None,
        "metadata": {},
    }
    fields.update(extra)
    return fields


def make_dataset(name: str = "shop", owner=None, questions: int = 0) -> Dataset:
    """A dataset with ``questions`` items, each with expected SQL."""
    found = Dataset.objects.create(name=name, owner=owner)
    for i in range(questions):
        DatasetItem.objects.create(dataset=found, question=f"question {i}", expected_sql=f"SELECT {i}")
    return found


def make_experiment(
    of: Dataset, verdicts: list[bool | None], *, name: str = "run", started_at=None, **fields
) -> Experiment:
    """A finished experiment of ``of`` whose n-th item got the n-th verdict (True: passed, its SQL
    equal; None: not judged), each with a trace of its own, 120 tokens and $0.001."""
    fields.setdefault("owner", of.owner)  # run by its dataset's owner, unless said otherwise
    found = Experiment.objects.create(
        dataset=of, name=name, started_at=started_at or timezone.now(), status=Experiment.Status.FINISHED, **fields
    )
    for item, passed in zip(of.items.all(), verdicts, strict=False):
        trace = make_trace(item.question, owner=of.owner)
        ExperimentItem.objects.create(
            experiment=found,
            item=item,
            trace=trace,
            passed=passed,
            execution="equal" if passed else "different" if passed is False else "",
            reason="" if passed else "the rows differ",
            sql=f"SELECT {item.pk} FROM t",
            duration_ms=1000 + 100 * item.pk,
            total_tokens=120,
            cost=Decimal("0.001"),
        )
    return found


def make_agent_trace(
    steps: int = 30, *, request: str = "a long agent run", status: str = Trace.Status.SUCCESS, **origin
) -> Trace:
    """A trace of the shape of a long agent run, stored as the store stores it: one root agent
    span, ``steps`` step spans under it, each with a model call (recording the messages added
    since the call before, as the built-in agent does) and a ``run_sql`` tool call. Every 100th
    step's tool call fails. ``status`` running leaves it without its end."""
    trace_id = uuid.uuid4()
    started = origin.pop("started_at", timezone.now() - dt.timedelta(hours=1))
    origin = {"started_at": started, "session_id": origin.pop("session_id", "s"), **origin}
    if "owner" in origin:
        owner = origin.pop("owner")
        origin["owner_id"] = owner.pk if owner is not None else None
    events: list[tuple] = []

    def add(kind: EventType, data: dict, moment: dt.datetime) -> None:
        events.append((kind, data, moment))

    def at(ms: int) -> dt.datetime:
        return started + dt.timedelta(milliseconds=ms)

    add(
        EventType.TRACE_STARTED,
        {
            "trace_id": str(trace_id),
            "trace_name": "agent",
            "request": request,
            "agent_name": "agent",
            "max_steps": steps,
            "metadata": {"model": "builtin"},
        },
        started,
    )
    root = uuid.uuid4()
    add(EventType.STEP_STARTED, run_fields(trace_id, root, "agent", "agent", "running", start=started), started)
    recorded = 0
    for number in range(1, steps + 1):
        step, think, tool = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        begin = at(number * 10)
        sent = [{"role": "user", "content": f"go on with step {number}"}]
        # The system prompt first; then the model's answer to the call before, and the next prompt.
        earlier = {"role": "assistant", "content": f"step {number - 1} done"}
        sent.insert(0, {"role": "system", "content": "You are a read-only SQL agent."} if number == 1 else earlier)
        inputs = {
            "content": sent[-1]["content"],
            "message_count": recorded + len(sent),
            "messages": sent,
            "messages_from": recorded,
            "tool_names": ["run_sql"],
        }
        if number == 1:
            inputs["tools"] = [{"type": "function", "function": {"name": "run_sql"}}]
        recorded += len(sent)
        failed = number % 100 == 0
        add(
            EventType.RUN_COMPLETED,
            run_fields(trace_id, step, f"step_{number}", "agent", "success", root, start=begin, duration_ms=9),
            at(number * 10 + 9),
        )
        add(
            EventType.THINK_COMPLETED,
            run_fields(
                trace_id,
                think,
                "think",
                "think",
                "success",
                step,
                start=begin,
                inputs=inputs,
                outputs={"content": "", "tool_calls": []},
                duration_ms=4,
                token_usage={"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
            ),
            at(number * 10 + 4),
        )
        tool_end = run_fields(
            trace_id,
            tool,
            "run_sql",
            "tool",
            "error" if failed else "success",
            step,
            start=at(number * 10 + 5),
            inputs={"sql": f"SELECT {number}"},
            duration_ms=3,
        )
        if failed:
            tool_end.update(error="no such table", error_type="OperationalError")
        add(EventType.RUN_ERROR if failed else EventType.TOOL_COMPLETED, tool_end, at(number * 10 + 8))
    end = at(steps * 10 + 20)
    add(
        EventType.RUN_COMPLETED,
        run_fields(trace_id, root, "agent", "agent", "success", start=started, duration_ms=steps * 10 + 20),
        end,
    )
    if status != Trace.Status.RUNNING:
        add(
            EventType.TRACE_COMPLETED,
            {
                "trace_id": str(trace_id),
                "duration_ms": steps * 10 + 20,
                "total_runs": 1 + 3 * steps,
                "status": status,
                "total_cost": 0.0,
                "total_tokens": 12 * steps,
                "final_response": "done",
            },
            end,
        )
    numbered = []
    for seq, (kind, data, moment) in enumerate(events, start=1):
        message = protocol.envelope(
            kind, data, session_id=origin["session_id"], timestamp=moment, trace_id=trace_id, seq=seq
        )
        numbered.append(Numbered(trace_id, seq, kind, moment, message["message_id"], protocol.dumps(message), data))
    outcome = store_now(numbered, {trace_id: origin})
    assert not outcome.failed, outcome.failed
    return Trace.objects.get(pk=trace_id)
