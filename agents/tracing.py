"""Turns the agent's steps into protocol events on a TraceSink: the run tree and its timings."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from agents.events import (
    EventData,
    EventType,
    RunFields,
    RunStatus,
    RunType,
    TokenUsage,
    format_timestamp,
    new_run_id,
    utcnow,
)
from agents.sink import TraceSink

STARTED_EVENT = {
    RunType.AGENT: EventType.STEP_STARTED,
    RunType.THINK: EventType.THINK_STARTED,
    RunType.TOOL: EventType.TOOL_STARTED,
}
COMPLETED_EVENT = {
    RunType.AGENT: EventType.RUN_COMPLETED,
    RunType.THINK: EventType.THINK_COMPLETED,
    RunType.TOOL: EventType.TOOL_COMPLETED,
}


@dataclass
class LlmUsage:
    """What a model call used: reported on its think run."""

    tokens: TokenUsage
    model: str
    cost: float


@dataclass
class RunRecord:
    name: str
    run_type: RunType
    parent: RunRecord | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    run_id: uuid.UUID = field(default_factory=new_run_id)
    status: RunStatus = RunStatus.RUNNING
    started_at: dt.datetime = field(default_factory=utcnow)
    started_clock: float = field(default_factory=time.perf_counter)
    ended_at: dt.datetime | None = None
    duration_ms: int | None = None
    error: str | None = None
    error_type: str | None = None


class Tracer:
    """Emits run events through the sink and remembers which runs are still open."""

    def __init__(self, sink: TraceSink) -> None:
        self.sink = sink
        self.trace_id = sink.trace_id
        self.open_runs: dict[uuid.UUID, RunRecord] = {}
        self.total_runs = 0

    def fields(self, run: RunRecord) -> RunFields:
        return RunFields(
            run_id=str(run.run_id),
            trace_id=str(self.trace_id),
            parent_run_id=str(run.parent.run_id) if run.parent else None,
            name=run.name,
            run_type=str(run.run_type),
            status=str(run.status),
            start_time=format_timestamp(run.started_at),
            end_time=format_timestamp(run.ended_at) if run.ended_at else None,
            duration_ms=run.duration_ms,
            inputs=run.inputs,
            outputs=run.outputs,
            error=run.error,
            error_type=run.error_type,
            metadata=run.metadata,
        )

    async def emit(self, event_type: EventType, data: EventData) -> None:
        await self.sink.emit(event_type, data)

    async def start(
        self,
        name: str,
        run_type: RunType,
        parent: RunRecord | None = None,
        inputs: dict | None = None,
        metadata: dict | None = None,
    ) -> RunRecord:
        run = RunRecord(name, run_type, parent, inputs or {}, metadata=metadata or {})
        self.open_runs[run.run_id] = run
        self.total_runs += 1
        await self.emit(STARTED_EVENT[run_type], self.fields(run))
        return run

    async def finish(
        self,
        run: RunRecord,
        status: RunStatus = RunStatus.SUCCESS,
        outputs: dict | None = None,
        error: str | None = None,
        error_type: str | None = None,
        usage: LlmUsage | None = None,
    ) -> None:
        """Close a run: its completed event, or ``run_error`` when it failed or was cancelled."""
        run.status = status
        run.ended_at = utcnow()
        run.duration_ms = int((time.perf_counter() - run.started_clock) * 1000)
        if outputs is not None:
            run.outputs = outputs
        run.error, run.error_type = error, error_type
        self.open_runs.pop(run.run_id, None)
        failed = status in (RunStatus.ERROR, RunStatus.CANCELLED) and run.run_type != RunType.AGENT
        event_type = EventType.RUN_ERROR if failed else COMPLETED_EVENT[run.run_type]
        data = self.fields(run)
        if usage is not None:
            data["token_usage"], data["model"], data["cost"] = usage.tokens, usage.model, usage.cost
        await self.emit(event_type, data)

    async def close_open_runs(self, status: RunStatus, error: str, error_type: str) -> None:
        """Innermost first, so children end before their step."""
        for run in sorted(self.open_runs.values(), key=lambda r: r.parent is None):
            await self.finish(run, status, error=error, error_type=error_type)
