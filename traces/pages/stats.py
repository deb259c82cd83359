"""Numbers for the dashboard over a time range.

A range is a number of hour or day buckets ending with the current one, in the current time
zone. Every bucket of the range is there, zero when nothing ran, so the charts span the whole
range. The numbers are sums of UTC hours by owner and model (``traces.store.rollups``: the sealed
hours from their rollups, the latest from the traces), so they cost the same at any size of the
history; p50 and p95 are read from a histogram of the durations, within 2.5%.
"""

from __future__ import annotations

import bisect
import datetime as dt
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import TextField, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce
from django.utils import timezone

from traces.models import Run, Trace
from traces.pages import summary as summaries
from traces.store import rollups

# The error type of a statement the agent's database stopped at its time limit
# (agents.database.base.QueryError).
TIMED_OUT = "QueryTimeout"
# Models with a series of their own in the charts; the rest are summed as one.
MODEL_SERIES = 6
OTHER_MODELS = "other models"
NO_MODEL = "(no model)"


@dataclass(frozen=True)
class Span:
    """A dashboard range: ``buckets`` hours or days, the last one the current."""

    buckets: int
    hourly: bool

    def starts(self, now: dt.datetime) -> list[dt.datetime]:
        """The start of each bucket, oldest first, in the current time zone."""
        local = timezone.localtime(now)
        if self.hourly:
            # Hours are counted in UTC, so that a daylight-saving change neither skips nor repeats one.
            last = local.replace(minute=0, second=0, microsecond=0).astimezone(dt.UTC)
            return [timezone.localtime(last - dt.timedelta(hours=n)) for n in reversed(range(self.buckets))]
        today = local.date()
        # A day starts at the UTC hour its midnight is in: the dashboard sums whole UTC hours. Where
        # the offset is not whole hours (India's +05:30), a day runs from 23:30 to 23:30 local time.
        return [
            timezone.localtime(
                rollups.hour_of(timezone.make_aware(dt.datetime.combine(today - dt.timedelta(days=n), dt.time.min)))
            )
            for n in reversed(range(self.buckets))
        ]


RANGES = {"24h": Span(24, hourly=True), "7d": Span(7, False), "30d": Span(30, False), "90d": Span(90, False)}
DEFAULT_RANGE = "7d"


@dataclass
class Tally:
    """Traces of a model (or of all) over the range."""

    name: str
    traces: int = 0
    errors: int = 0
    tokens: int = 0
    cost: Decimal = Decimal(0)
    duration_ms: int = 0
    timed: int = 0  # traces with a duration

    @property
    def avg_ms(self) -> float | None:
        return self.duration_ms / self.timed if self.timed else None

    @property
    def error_rate(self) -> float:
        return self.errors / self.traces if self.traces else 0.0


@dataclass
class Series:
    """Per-bucket values of the charts: traces by status, and traces, tokens and cost by model."""

    size: int
    by_status: dict[str, list[int]] = field(default_factory=dict)
    traces: dict[str, list[int]] = field(default_factory=dict)
    tokens: dict[str, list[int]] = field(default_factory=dict)
    cost: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for status in Trace.Status.values:
            self.by_status[status] = [0] * self.size

    def add_model(self, model: str) -> None:
        self.traces.setdefault(model, [0] * self.size)
        self.tokens.setdefault(model, [0] * self.size)
        self.cost.setdefault(model, [0.0] * self.size)

    def add(self, index: int, status: str, model: str, traces: int, tokens: int, cost: float) -> None:
        self.add_model(model)
        self.by_status.setdefault(status, [0] * self.size)[index] += traces
        self.traces[model][index] += traces
        self.tokens[model][index] += tokens
        self.cost[model][index] += cost


QUESTIONS_AMONG = 1000  # the most frequent questions are counted among the range's newest traces


def dashboard(visible: rollups.Visible, span: Span, now: dt.datetime) -> dict:
    """The dashboard of the traces ``visible`` sees (``traces.access.visible_filter`` for a user)."""
    starts = span.starts(now)
    summary = summaries.read(starts, visible)
    rows = list(grouped_rows(summary))
    totals, by_model = tallies(rows)
    return {
        "since": starts[0],
        "totals": totals,
        "models": by_model,
        "chart": chart_data(starts, span, series_of(rows, starts, by_model)),
        "p50": summaries.percentile(summary.latency, 0.5),
        "p95": summaries.percentile(summary.latency, 0.95),
        "tools": tool_rows(summary),
        "slowest_sql": slowest_sql(summary),
        "questions": questions(visible, starts[0]),
        "questions_among": QUESTIONS_AMONG,
    }


def grouped_rows(summary: summaries.Summary) -> Iterator[dict]:
    """The sums as rows grouped by bucket (the hour), model and status. Tokens, cost and durations
    are not kept by status: an hour's go with the first of its rows."""
    for (hour, model), sums in summary.traces.items():
        amounts = {"tokens": sums.total_tokens, "cost": sums.cost, "ms": sums.duration_ms, "timed": sums.timed}
        for status, n in sums.by_status().items():
            if n:
                yield {"bucket": hour, "model": model, "status": status, "n": n, **amounts}
                amounts = {"tokens": 0, "cost": Decimal(0), "ms": 0, "timed": 0}


def tool_rows(summary: summaries.Summary) -> list[dict]:
    return [
        {
            "name": name,
            "calls": tool.calls,
            "errors": tool.errors,
            "avg_ms": tool.duration_ms / tool.timed if tool.timed else None,
            "error_share": tool.errors / tool.calls if tool.calls else 0,
        }
        for name, tool in sorted(summary.tools.items(), key=lambda item: (-item[1].calls, item[0]))
    ]


def questions(visible: rollups.Visible, since: dt.datetime) -> list[dict]:
    """The most asked questions among the ``QUESTIONS_AMONG`` newest traces since ``since``: a walk
    of ``trace_started_idx`` that stops there, however many traces the range holds."""
    newest = (
        Trace.objects.filter(visible(""), started_at__gte=since)
        .order_by("-started_at", "-id")
        .values_list("request", flat=True)[:QUESTIONS_AMONG]
    )
    counted = Counter(newest)
    return [{"request": text, "n": n} for text, n in sorted(counted.items(), key=lambda item: (-item[1], item[0]))[:10]]


def tallies(rows: list[dict]) -> tuple[Tally, list[Tally]]:
    """The totals, and each model's, the most used first, from rows grouped by bucket, model and status."""
    totals = Tally("all")
    models: dict[str, Tally] = {}
    for row in rows:
        name = row["model"] or NO_MODEL
        for tally in (totals, models.setdefault(name, Tally(name))):
            tally.traces += row["n"]
            tally.errors += row["n"] if row["status"] == Trace.Status.ERROR else 0
            tally.tokens += row["tokens"] or 0
            tally.cost += row["cost"] or 0
            tally.duration_ms += row["ms"] or 0
            tally.timed += row["timed"]
    return totals, sorted(models.values(), key=lambda t: (-t.traces, t.name))


def series_of(rows: list[dict], starts: list[dt.datetime], by_model: list[Tally]) -> Series:
    """Each bucket's values; the models past the MODEL_SERIES most used summed as one series."""
    charted = {t.name for t in by_model[:MODEL_SERIES]} if len(by_model) > MODEL_SERIES + 1 else None
    series = Series(len(starts))
    for tally in by_model:  # in order of use, the most used first
        if charted is None or tally.name in charted:
            series.add_model(tally.name)
    edges = [start.timestamp() for start in starts]
    for row in rows:
        index = bisect.bisect_right(edges, row["bucket"].timestamp()) - 1
        if index < 0:
            continue
        name = row["model"] or NO_MODEL
        model = name if charted is None or name in charted else OTHER_MODELS
        series.add(index, row["status"], model, row["n"], row["tokens"] or 0, float(row["cost"] or 0))
    return series


def slowest_sql(summary: summaries.Summary) -> list[dict]:
    """The longest ``run_sql`` calls, finished or not (an error or a timeout is often the slowest),
    as the summary found them: at most ``rollups.SLOWEST`` rows read."""
    chosen = [uuid.UUID(run_id) for _, run_id in summary.slowest]
    if not chosen:
        return []
    rows = (
        Run.objects.filter(pk__in=chosen)
        .annotate(sql=Coalesce(KT("outputs__sql"), KT("inputs__sql"), Value(""), output_field=TextField()))
        .order_by("-duration_ms", "id")
        .values("trace_id", "duration_ms", "status", "error_type", "error", "sql")
    )
    return [{**row, "outcome": outcome(row["status"], row["error_type"])} for row in rows]


def outcome(status: str, error_type: str) -> str:
    """How a query ended, as the dashboard marks it: "" when it succeeded."""
    if status == Run.Status.SUCCESS:
        return ""
    if error_type == TIMED_OUT:
        return "timed out"
    return {Run.Status.ERROR.value: "failed", Run.Status.CANCELLED.value: "cancelled"}.get(status, status)


def chart_data(starts: list[dt.datetime], span: Span, series: Series) -> dict:
    """What ``static/traces/dashboard.js`` draws: bucket starts (Unix seconds) and the values."""
    return {
        "x": [int(start.timestamp()) for start in starts],
        "bucket_seconds": 3600 if span.hourly else 86400,
        "hourly": span.hourly,
        "time_zone": timezone.get_current_timezone_name(),
        "status": series.by_status,
        "models": list(series.traces),
        "traces": list(series.traces.values()),
        "tokens": list(series.tokens.values()),
        "cost": [[round(value, 6) for value in values] for values in series.cost.values()],
    }
