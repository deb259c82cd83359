"""Two traces side by side: steps aligned by number, SQL diffed line by line."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from itertools import zip_longest

from traces.models import Run, Trace


@dataclass
class Step:
    name: str
    duration_ms: int | None
    tokens: int
    tools: list[str] = field(default_factory=list)
    sql: str = ""
    error: str = ""


def steps_of(trace: Trace) -> list[Step]:
    runs = list(trace.runs.order_by("start_time", "id"))
    steps: dict = {}
    for run in runs:
        if run.run_type == Run.Type.AGENT:
            steps[run.pk] = Step(run.name, run.duration_ms, 0)
    for run in runs:
        step = steps.get(run.parent_id)
        if step is None:
            continue
        if run.run_type == Run.Type.THINK:
            step.tokens += run.total_tokens
        else:
            step.tools.append(run.name)
            sql = (run.outputs or {}).get("sql") or (run.inputs or {}).get("sql") or ""
            if sql:
                step.sql = (step.sql + "\n" + sql).strip()
        if run.error:
            step.error = f"{run.error_type}: {run.error}"
    return list(steps.values())


def sql_diff(a: str, b: str) -> list[tuple[str, str]]:
    """(kind, line) with kind in same / removed / added."""
    lines = []
    for line in difflib.ndiff(a.splitlines(), b.splitlines()):
        kind = {"  ": "same", "- ": "removed", "+ ": "added"}.get(line[:2])
        if kind:
            lines.append((kind, line[2:]))
    return lines


def compare(a: Trace, b: Trace) -> list[dict]:
    rows = []
    for index, (left, right) in enumerate(zip_longest(steps_of(a), steps_of(b)), start=1):
        rows.append(
            {
                "number": index,
                "a": left,
                "b": right,
                "diff": sql_diff(left.sql if left else "", right.sql if right else "")
                if (left and left.sql) or (right and right.sql)
                else [],
            }
        )
    return rows
