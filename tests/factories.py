"""Sample traces for tests: real rows, as the recorder would have written them."""

from __future__ import annotations

import datetime as dt
import uuid

from django.utils import timezone

from agents.events import EventType, format_timestamp, utcnow
from traces import protocol
from traces.models import Event, Run, Trace


def make_trace(
    request: str = "显示用户表的10条用户数据", *, status: str = Trace.Status.SUCCESS, runs: int = 2, **fields
) -> Trace:
    started = fields.pop("started_at", timezone.now() - dt.timedelta(seconds=5))
    fields.setdefault("model", "builtin")
    trace = Trace.objects.create(
        name="sql_agent_execution",
        agent_name="sql_agent",
        request=request,
        status=status,
        started_at=started,
        ended_at=started + dt.timedelta(seconds=2),
        duration_ms=2000,
        final_response=fields.pop("final_response", "Here are the rows."),
        total_tokens=120,
        **fields,
    )
    step = Run.objects.create(
        trace=trace, name="step_1", run_type=Run.Type.AGENT, status=Run.Status.SUCCESS, start_time=started
    )
    for i in range(runs):
        Run.objects.create(
            trace=trace,
            parent=step,
            name=f"run_{i}",
            run_type=Run.Type.TOOL,
            status=Run.Status.SUCCESS,
            start_time=started,
        )
    for seq, kind in enumerate([EventType.TRACE_STARTED, EventType.TRACE_COMPLETED], start=1):
        message = protocol.envelope(kind, {"trace_id": str(trace.pk)}, session_id="s", trace_id=trace.pk, seq=seq)
        Event.objects.create(
            trace=trace,
            seq=seq,
            event_type=kind,
            timestamp=started,
            message_id=message["message_id"],
            envelope=protocol.dumps(message),
        )
    trace.last_seq = 2
    trace.save(update_fields=["last_seq"])
    return trace


def run_fields(
    trace_id: uuid.UUID,
    run_id: uuid.UUID,
    name: str,
    run_type: str,
    status: str,
    parent: uuid.UUID | None = None,
    **extra,
) -> dict:
    now = format_timestamp(utcnow())
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
