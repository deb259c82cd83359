"""Numbers for the dashboard, computed in the database over a time range."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Avg, Count, Q, Sum
from django.db.models.functions import TruncDay, TruncHour

from traces.models import Run, Trace


@dataclass
class Bucket:
    start: dt.datetime
    success: int = 0
    error: int = 0
    cancelled: int = 0
    running: int = 0
    tokens: int = 0
    cost: float = 0.0

    @property
    def total(self) -> int:
        return self.success + self.error + self.cancelled + self.running


def percentile(values: list[int], fraction: float) -> int | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(fraction * (len(values) - 1)))]


def dashboard(traces, since: dt.datetime, hourly: bool) -> dict:
    traces = traces.filter(started_at__gte=since)
    trunc = TruncHour("started_at") if hourly else TruncDay("started_at")
    buckets: dict[dt.datetime, Bucket] = {}
    for row in (
        traces.annotate(bucket=trunc)
        .values("bucket", "status")
        .annotate(n=Count("id"), tokens=Sum("total_tokens"), cost=Sum("total_cost"))
        .order_by("bucket")
    ):
        bucket = buckets.setdefault(row["bucket"], Bucket(row["bucket"]))
        setattr(bucket, row["status"], getattr(bucket, row["status"]) + row["n"])
        bucket.tokens += row["tokens"] or 0
        bucket.cost += float(row["cost"] or 0)
    totals = traces.aggregate(
        runs=Count("id"),
        errors=Count("id", filter=Q(status=Trace.Status.ERROR)),
        tokens=Sum("total_tokens"),
        cost=Sum("total_cost"),
        avg_ms=Avg("duration_ms"),
    )
    durations = list(
        traces.exclude(duration_ms=None).order_by("duration_ms").values_list("duration_ms", flat=True)[:100000]
    )
    runs = Run.objects.filter(trace__in=traces)
    tools = list(
        runs.filter(run_type=Run.Type.TOOL)
        .values("name")
        .annotate(calls=Count("id"), errors=Count("id", filter=Q(status=Run.Status.ERROR)), avg_ms=Avg("duration_ms"))
        .order_by("-calls")
    )
    tool_rows = [{**tool, "error_share": tool["errors"] / tool["calls"] if tool["calls"] else 0} for tool in tools]
    slowest_sql = [
        {"trace_id": row["trace_id"], "duration_ms": row["duration_ms"], "sql": (row["outputs"] or {}).get("sql", "")}
        for row in runs.filter(run_type=Run.Type.TOOL, name="run_sql", status=Run.Status.SUCCESS)
        .exclude(duration_ms=None)
        .order_by("-duration_ms")
        .values("trace_id", "duration_ms", "outputs")[:10]
    ]
    questions = list(traces.values("request").annotate(n=Count("id")).order_by("-n", "request")[:10])
    return {
        "buckets": list(buckets.values()),
        "totals": totals,
        "error_rate": (totals["errors"] / totals["runs"]) if totals["runs"] else 0,
        "p50": percentile(durations, 0.5),
        "p95": percentile(durations, 0.95),
        "tools": tool_rows,
        "slowest_sql": slowest_sql,
        "questions": questions,
    }


def bar_chart(buckets: list[Bucket], keys: list[str], width: int = 720, height: int = 160) -> dict:
    """Geometry for a stacked SVG bar chart: numbers only, drawn by the template."""
    peak = max((sum(getattr(b, k) for k in keys) for b in buckets), default=0) or 1
    step = width / max(len(buckets), 1)
    bars = []
    for index, bucket in enumerate(buckets):
        y = height
        for key in keys:
            value = getattr(bucket, key)
            h = value / peak * (height - 10)
            y -= h
            bars.append(
                {
                    "x": round(index * step + 1, 1),
                    "y": round(y, 1),
                    "w": round(max(step - 2, 1), 1),
                    "h": round(h, 1),
                    "key": key,
                    "value": value,
                    "label": bucket.start,
                }
            )
    return {"bars": bars, "width": width, "height": height, "peak": peak}
