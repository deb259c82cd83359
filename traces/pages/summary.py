"""What the dashboard reads of a range: the sealed hours summed in the database from their rollups
(``traces.store.rollups``), the others summed from the traces with ``rollups.summed``.

Each query is over rollup rows, never the whole history: the sealed hours of the range grouped by
bucket and model (the chart, the totals and the table by model); the latency histograms of whole
UTC days (``LatencyDay``) and of the hours around them; the tools of whole days (``ToolDay``) and
hours by name; and the ``run_sql`` calls of the ten hours or days with the slowest.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Iterable

from django.db.models import Case, Sum, Value, When

from agents.tools import QueryTool
from traces.models import LatencyDay, RollupSeal, StaleHour, ToolDay, ToolHour, TraceHour
from traces.store.rollups import (
    DAY,
    HOUR,
    SLOWEST,
    Hours,
    ToolSums,
    TraceSums,
    Visible,
    day_of,
    everyone,
    in_ranges,
    latency_value,
    summed,
)


def percentile(histogram: Counter[int], fraction: float) -> int | None:
    """The value at rank ``round(fraction * (n - 1))`` of the durations, as their bucket says."""
    count = sum(histogram.values())
    if not count:
        return None
    rank = min(count - 1, round(fraction * (count - 1)))
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen > rank:
            return latency_value(bucket)
    raise AssertionError("unreachable: the ranks end inside the histogram")


@dataclasses.dataclass
class Summary:
    """What the dashboard reads of a range of buckets (hours or days, each a whole number of UTC
    hours): the traces by bucket and model, every owner it may see summed; their latency
    histogram; the tools by name; and the slowest ``run_sql`` calls."""

    starts: list[dt.datetime]  # of the buckets, oldest first
    traces: dict[tuple[dt.datetime, str], TraceSums] = dataclasses.field(default_factory=dict)
    latency: Counter[int] = dataclasses.field(default_factory=Counter)
    tools: dict[str, ToolSums] = dataclasses.field(default_factory=dict)
    slowest: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # [(ms, run id hex)], slowest first

    def bucket_of(self, hour: dt.datetime) -> dt.datetime:
        return self.starts[max(0, bisect.bisect_right(self.starts, hour) - 1)]

    def add_traces(self, bucket: dt.datetime, model: str, sums: TraceSums) -> None:
        into = self.traces.get((bucket, model))
        if into is None:
            into = self.traces[(bucket, model)] = TraceSums()
        for name in SUMMED_FIELDS:
            setattr(into, name, getattr(into, name) + getattr(sums, name))

    def add_tool(self, name: str, sums: ToolSums) -> None:
        into = self.tools.setdefault(name, ToolSums())
        into.calls += sums.calls
        into.errors += sums.errors
        into.duration_ms += sums.duration_ms
        into.timed += sums.timed

    def add_slowest(self, calls: Iterable[tuple[int, str]]) -> None:
        self.slowest = sorted([*self.slowest, *calls], key=lambda call: (-call[0], call[1]))[:SLOWEST]

    def add(self, hours: Hours) -> None:
        """The sums of ``hours`` too."""
        for (hour, _, model), sums in hours.traces.items():
            self.add_traces(self.bucket_of(hour), model, sums)
            self.latency.update(sums.latency)
        for (_, _, name), tool in hours.tools.items():
            self.add_tool(name, tool)
            self.add_slowest(tool.slowest)


SUMMED_FIELDS = [field.name for field in dataclasses.fields(TraceSums) if field.name != "latency"]


def read(starts: list[dt.datetime], visible: Visible = everyone) -> Summary:
    """The sums of every trace ``visible`` sees that started at ``starts[0]`` or later, by the
    buckets that begin at ``starts``: the sealed hours from their rollups, the others from their
    traces."""
    since = starts[0]
    seal, stale = seal_and_stale(since)
    tail_from = max(since, seal) if seal is not None else since
    summary = Summary(starts)
    if since < tail_from:
        add_sealed(summary, since, tail_from, stale, visible)
    summary.add(summed([(tail_from, None)] + [(hour, hour + HOUR) for hour in stale], visible))
    return summary


def add_sealed(
    summary: Summary, since: dt.datetime, until: dt.datetime, stale: list[dt.datetime], visible: Visible
) -> None:
    """Add the sealed hours from ``since`` to ``until`` but the ``stale`` ones to ``summary``, summed
    in the database: a row per bucket and model; the histograms of whole days where a day's
    is there, else of hours; a row per tool; and the ``run_sql`` calls of the ten
    hours or days with the slowest (the range's ten slowest calls are among theirs). Whole UTC
    days are read from their day's rows (``LatencyDay``, ``ToolDay``) unless an hour of theirs is
    stale: a range of 90 days reads 90 rows per owner and tool rather than 2,160."""
    hours = TraceHour.objects.filter(visible(""), hour__gte=since, hour__lt=until).exclude(hour__in=stale)
    by_bucket = hours.annotate(bucket=bucket_index(summary.starts)).values("bucket", "model").order_by()
    for index, model, *totals in by_bucket.values_list("bucket", "model", *[Sum(name) for name in SUMMED_FIELDS]):
        summary.add_traces(summary.starts[index], model, TraceSums(*totals))
    days, rest = whole_days(since, until, stale)
    histograms = (
        hours.filter(in_ranges(rest, field="hour"))
        .values_list("latency")
        .union(LatencyDay.objects.filter(visible(""), day__in=days).values_list("latency"), all=True)
    )
    for (histogram,) in histograms:
        summary.latency.update({int(bucket): n for bucket, n in histogram.items()})
    tools = ToolHour.objects.filter(visible(""), in_ranges(rest, field="hour")).exclude(hour__in=stale)
    tool_days = ToolDay.objects.filter(visible(""), day__in=days)
    totals = ("name", Sum("calls"), Sum("errors"), Sum("duration_ms"), Sum("timed"))
    by_name = tools.values("name").order_by().values_list(*totals)
    for name, *sums in by_name.union(tool_days.values("name").order_by().values_list(*totals), all=True):
        summary.add_tool(name, ToolSums(*sums))
    for rows in (tools, tool_days):
        slowest = rows.filter(name=QueryTool.name, slowest_ms__isnull=False).order_by("-slowest_ms")[:SLOWEST]
        summary.add_slowest((ms, run_id) for calls in slowest.values_list("slowest", flat=True) for ms, run_id in calls)


def bucket_index(starts: list[dt.datetime], first: int = 0) -> Value | Case:
    """The index of the bucket an ``hour`` is in, as a search in halves: 7 comparisons a row for
    90 buckets rather than 45 (the hours before ``starts[0]`` are not asked for)."""
    if len(starts) == 1:
        return Value(first)
    middle = len(starts) // 2
    return Case(
        When(hour__gte=starts[middle], then=bucket_index(starts[middle:], first + middle)),
        default=bucket_index(starts[:middle], first),
    )


def whole_days(
    since: dt.datetime, until: dt.datetime, stale: list[dt.datetime]
) -> tuple[list[dt.datetime], list[tuple[dt.datetime, dt.datetime | None]]]:
    """The UTC days wholly from ``since`` to ``until`` with no stale hour, and the ranges of the
    hours between them outside those days."""
    stale_days = {day_of(hour) for hour in stale}
    days: list[dt.datetime] = []
    rest: list[tuple[dt.datetime, dt.datetime | None]] = []
    moment = since
    while moment < until:
        day = day_of(moment)
        if day == moment and day + DAY <= until and day not in stale_days:
            days.append(day)
            moment = day + DAY
            continue
        end = min(day + DAY, until)
        if rest and rest[-1][1] == moment:
            rest[-1] = (rest[-1][0], end)
        else:
            rest.append((moment, end))
        moment = end
    return days, rest


def seal_and_stale(since: dt.datetime) -> tuple[dt.datetime | None, list[dt.datetime]]:
    """In one query: the seal, and the stale hours from ``since`` up to it."""
    seals = RollupSeal.objects.filter(sealed_until__isnull=False).values_list("sealed_until", Value(True))
    stale = StaleHour.objects.filter(hour__gte=since).values_list("hour", Value(False))
    seal: dt.datetime | None = None
    hours = []
    for moment, is_seal in seals.union(stale, all=True):
        if is_seal:
            seal = moment
        else:
            hours.append(moment)
    return seal, [hour for hour in hours if seal is not None and hour < seal]
