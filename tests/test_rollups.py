"""The dashboard's hourly sums: the sealed hours read from rollups equal the sums of the traces
themselves after every kind of write (live runs, a late completion, an import, a prune, an admin
delete), for every range and every viewer; the sweep, and the command that rebuilds them."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import random
from collections import Counter
from decimal import Decimal
from functools import partial

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.db.models import Count, Q, Sum
from django.urls import reverse
from django.utils import timezone

from agents.events import EventType
from tests.factories import make_trace
from traces import protocol
from traces.access import visible_filter
from traces.admin import TraceAdmin
from traces.models import RollupSeal, Run, StaleHour, ToolHour, Trace, TraceHour
from traces.pages import stats
from traces.pages import summary as sums
from traces.store import retention, rollups, transfer
from traces.store.writer import Numbered, store_now

pytestmark = pytest.mark.django_db

DAY = dt.timedelta(days=1)


def ago(**delta) -> dt.datetime:
    return timezone.now() - dt.timedelta(**delta)


def history() -> list[Trace]:
    """Traces over 100 days, a few per hour-of-interest, with tools, models, statuses and costs."""
    made = []
    for i, age in enumerate(
        [dt.timedelta(minutes=1), dt.timedelta(hours=2), 3 * DAY, 3 * DAY, 20 * DAY, 60 * DAY, 95 * DAY]
    ):
        made.append(
            make_trace(
                f"question {i % 3}",
                started_at=timezone.now() - age,
                model=["builtin", "gpt-4o-mini"][i % 2],
                status=[Trace.Status.SUCCESS, Trace.Status.ERROR][i % 3 == 2],
                total_cost=Decimal("0.00100001") * i,
                runs=i % 3,
            )
        )
    for i, trace in enumerate(made):
        Trace.objects.filter(pk=trace.pk).update(duration_ms=100 * (i + 1))
    sql_call(made[2], 900)
    sql_call(made[2], 50)
    sql_call(made[4], 4000)
    return made


def sql_call(trace: Trace, ms: int) -> Run:
    return Run.objects.create(
        trace=trace,
        name="run_sql",
        run_type=Run.Type.TOOL,
        status=Run.Status.SUCCESS,
        start_time=trace.started_at,
        duration_ms=ms,
        inputs={"sql": f"SELECT {ms}"},
    )


def from_rows(since: dt.datetime, visible: rollups.Visible = rollups.everyone) -> sums.Summary:
    summary = sums.Summary([since])
    summary.add(rollups.summed([(since, None)], visible))
    return summary


def assert_exact(since: dt.datetime, visible: rollups.Visible = rollups.everyone) -> None:
    """What the dashboard reads equals the sums of the traces, summed afresh from their rows."""
    assert sums.read([since], visible) == from_rows(since, visible)


def expected(since: dt.datetime, visible: rollups.Visible = rollups.everyone) -> dict:
    """The dashboard's totals as one query over the rows says them."""
    traces = Trace.objects.filter(visible(""), started_at__gte=since)
    totals = traces.aggregate(n=Count("id"), errors=Count("id", filter=Q(status="error")), tokens=Sum("total_tokens"))
    calls = Run.objects.filter(trace__in=traces, run_type=Run.Type.TOOL).count()
    return {"traces": totals["n"], "errors": totals["errors"], "tokens": totals["tokens"] or 0, "calls": calls}


def shown(numbers: dict) -> dict:
    totals = numbers["totals"]
    calls = sum(tool["calls"] for tool in numbers["tools"])
    return {"traces": totals.traces, "errors": totals.errors, "tokens": totals.tokens, "calls": calls}


def sealed(now: dt.datetime | None = None) -> None:
    rollups.refresh_stale()
    rollups.seal(now)


def test_it_seals_ended_hours_and_reads_them_from_the_rollups():
    made = history()
    sealed()
    seal = RollupSeal.objects.get().sealed_until
    assert seal == rollups.hour_of(timezone.now() - rollups.SEAL_GRACE)
    assert TraceHour.objects.filter(hour__lt=seal).count() >= 5 and ToolHour.objects.exists()
    since = rollups.hour_of(ago(days=100))
    assert_exact(since)
    # The sealed hours are read from their rollups: a change behind the store's back is not seen.
    Trace.objects.filter(pk=made[5].pk).update(total_tokens=999999)
    assert sum(s.total_tokens for s in sums.read([since]).traces.values()) < 999999


def test_live_runs_in_the_current_hour_are_read_from_the_traces():
    history()
    sealed()
    before = sums.read([rollups.hour_of(ago(days=100))])
    make_trace("just now", started_at=ago(seconds=1))
    assert not StaleHour.objects.exists()  # the current hour is never sealed: nothing to mark
    after = sums.read([rollups.hour_of(ago(days=100))])
    assert sum(s.success for s in after.traces.values()) == sum(s.success for s in before.traces.values()) + 1
    assert_exact(rollups.hour_of(ago(days=100)))


def test_a_late_completion_of_an_old_trace_marks_its_hour_stale():
    history()
    old = make_trace("a long run", started_at=ago(days=2), status=Trace.Status.RUNNING)
    sealed()
    since = rollups.hour_of(ago(days=7))
    assert_exact(since)
    completed = {"trace_id": str(old.pk), "status": "success", "duration_ms": 7000, "final_response": "done"}
    message = protocol.envelope(
        EventType.TRACE_COMPLETED,
        completed,
        session_id="s",
        timestamp=timezone.now(),
        trace_id=old.pk,
        seq=old.last_seq + 1,
    )
    event = Numbered(
        old.pk,
        old.last_seq + 1,
        EventType.TRACE_COMPLETED,
        timezone.now(),
        message["message_id"],
        protocol.dumps(message),
        completed,
    )
    assert not store_now([event]).failed
    assert list(StaleHour.objects.values_list("hour", flat=True)) == [rollups.hour_of(old.started_at)]
    assert_exact(since)  # read from the traces while stale
    assert rollups.refresh_stale() == 1 and not StaleHour.objects.exists()
    assert_exact(since)  # and from the rollup summed again
    assert sum(s.running for s in sums.read([since]).traces.values()) == 0


def test_an_import_of_old_traces_marks_their_hours_stale():
    made = history()
    exported = "".join(transfer.export_jsonl(Trace.objects.filter(pk__in=[made[3].pk, made[4].pk])))
    retention.prune(Trace.objects.filter(pk__in=[made[3].pk, made[4].pk]))
    sealed()
    since = rollups.hour_of(ago(days=30))
    before = shown(stats.dashboard(rollups.everyone, stats.RANGES["30d"], timezone.now()))
    imported, _ = transfer.import_jsonl(io.BytesIO(exported.encode()))
    assert imported == 2 and StaleHour.objects.count() == 2
    after = shown(stats.dashboard(rollups.everyone, stats.RANGES["30d"], timezone.now()))
    assert after["traces"] == before["traces"] + 2 and after == expected(since)
    assert_exact(since)
    sealed()
    assert_exact(since)


def test_a_prune_and_an_admin_delete_mark_their_hours_stale():
    made = history()
    sealed()
    since = rollups.hour_of(ago(days=100))
    assert retention.prune(retention.prunable(dt.timedelta(days=50))).traces == 2
    assert StaleHour.objects.count() == 2
    assert_exact(since)
    TraceAdmin(Trace, admin.site).delete_queryset(None, Trace.objects.filter(pk=made[4].pk))
    assert StaleHour.objects.count() == 3
    assert_exact(since)
    sealed()
    assert not StaleHour.objects.exists()
    assert_exact(since)
    assert shown(stats.dashboard(rollups.everyone, stats.RANGES["90d"], timezone.now())) == expected(
        stats.RANGES["90d"].starts(timezone.now())[0]
    )


@pytest.mark.parametrize("key", list(stats.RANGES))
def test_every_range_equals_the_traces_of_the_range(key):
    history()
    sealed()
    now = timezone.now()
    numbers = stats.dashboard(rollups.everyone, stats.RANGES[key], now)
    since = stats.RANGES[key].starts(now)[0]
    assert shown(numbers) == expected(since)
    assert sum(sum(values) for values in numbers["chart"]["status"].values()) == expected(since)["traces"]
    exact = sorted(Trace.objects.filter(started_at__gte=since).values_list("duration_ms", flat=True))
    for fraction, key_ in ((0.5, "p50"), (0.95, "p95")):
        truth = stats_percentile(exact, fraction)
        assert abs(numbers[key_] - truth) <= 0.025 * truth


def stats_percentile(values: list[int], fraction: float) -> int:
    return values[min(len(values) - 1, round(fraction * (len(values) - 1)))]


def test_the_slowest_sql_of_a_range_comes_from_the_sealed_hours_and_the_tail():
    made = history()
    sealed()
    sql_call(made[0], 2500)  # the current hour
    rows = stats.dashboard(rollups.everyone, stats.RANGES["30d"], timezone.now())["slowest_sql"]
    assert [row["duration_ms"] for row in rows] == [4000, 2500, 900, 50]
    assert rows[0]["sql"] == "SELECT 4000" and rows[0]["trace_id"] == made[4].pk


def test_percentiles_from_the_histogram_are_within_two_and_a_half_percent():
    generator = random.Random(7)
    for _ in range(50):
        values = sorted(int(generator.lognormvariate(7, 2)) for _ in range(generator.randint(1, 400)))
        histogram = Counter(rollups.latency_bucket(ms) for ms in values)
        for fraction in (0.5, 0.95):
            truth = stats_percentile(values, fraction)
            assert abs(sums.percentile(histogram, fraction) - truth) <= max(0.025 * truth, 0.5)


def test_each_user_sees_the_numbers_of_the_traces_they_may_see(client, settings, django_user_model):
    settings.TRACE_REQUIRE_AUTH = True
    hal, ivy = django_user_model.objects.create_user("hal"), django_user_model.objects.create_user("ivy")
    staff = django_user_model.objects.create_user("sam", is_staff=True)
    for owner, count in ((hal, 3), (ivy, 2), (None, 1)):
        for i in range(count):
            make_trace(f"q{i}", owner=owner, started_at=ago(days=2, minutes=i))
            make_trace(f"q{i}", owner=owner, started_at=ago(seconds=10 + i))
    sealed()
    assert TraceHour.objects.filter(owner=hal).exists()

    def traces_seen(user) -> int:
        client.force_login(user)
        response = client.get(reverse("traces:dashboard"), {"range": "7d"})
        assert_exact(rollups.hour_of(ago(days=7)), partial(visible_filter, user))
        return response.context["totals"].traces

    assert (traces_seen(hal), traces_seen(ivy), traces_seen(staff)) == (6, 4, 12)
    settings.TRACE_SHARE_UNOWNED = True
    assert (traces_seen(hal), traces_seen(ivy), traces_seen(staff)) == (8, 6, 12)
    client.logout()
    assert client.get(reverse("traces:dashboard")).status_code == 302


def test_the_dashboard_is_a_constant_number_of_queries_over_sealed_hours(client, django_assert_max_num_queries):
    made = history()
    sealed()
    Trace.objects.filter(pk=made[3].pk).update(model="other")
    rollups.mark_stale([made[3].started_at])
    for key in stats.RANGES:
        with django_assert_max_num_queries(10):
            assert client.get(reverse("traces:dashboard"), {"range": key}).status_code == 200


def test_the_rebuild_command_sums_the_sealed_hours_again(capsys):
    made = history()
    sealed()
    since = rollups.hour_of(ago(days=100))
    Trace.objects.filter(pk=made[5].pk).update(total_tokens=12345)  # behind the store's back
    assert sums.read([since]) != from_rows(since)
    day = made[5].started_at.astimezone(dt.UTC).date().isoformat()
    out = io.StringIO()
    call_command("rebuildrollups", "--since", day, "--until", day, stdout=out, verbosity=2)
    assert "Summed 24 hours." in out.getvalue() and "summed up to" in out.getvalue()
    assert_exact(since)
    TraceHour.objects.all().delete()
    ToolHour.objects.all().delete()
    out = io.StringIO()
    call_command("rebuildrollups", stdout=out)
    assert "Summed" in out.getvalue() and "summed up to" not in out.getvalue()  # not a terminal
    assert_exact(since)


def test_a_fresh_install_seals_its_history_over_several_sweeps():
    history()
    assert RollupSeal.objects.count() == 0
    assert rollups.seal(chunks=2) == 48
    assert_exact(rollups.hour_of(ago(days=100)))
    rollups.seal()
    assert RollupSeal.objects.get().sealed_until == rollups.hour_of(timezone.now() - rollups.SEAL_GRACE)
    assert_exact(rollups.hour_of(ago(days=100)))


def test_an_empty_history_is_sealed_up_to_now():
    assert rollups.seal() == 0
    assert RollupSeal.objects.get().sealed_until == rollups.hour_of(timezone.now() - rollups.SEAL_GRACE)
    numbers = stats.dashboard(rollups.everyone, stats.RANGES["7d"], timezone.now())
    assert numbers["totals"].traces == 0 and numbers["p50"] is None and numbers["slowest_sql"] == []


def test_a_day_in_a_half_hour_time_zone_starts_at_the_utc_hour_of_its_midnight(settings):
    settings.TIME_ZONE = "Asia/Kolkata"
    timezone.activate("Asia/Kolkata")
    try:
        starts = stats.RANGES["7d"].starts(timezone.now())
        assert all(start.astimezone(dt.UTC).minute == 0 for start in starts)
        assert all(timezone.localtime(start).strftime("%H:%M") == "23:30" for start in starts)
    finally:
        timezone.deactivate()


def test_a_deleted_users_traces_become_nobodys_in_the_sums(django_user_model):
    hal = django_user_model.objects.create_user("hal")
    at = ago(days=3)
    make_trace("mine", owner=hal, started_at=at)
    make_trace("nobody's", started_at=at)
    sealed()
    since = rollups.hour_of(ago(days=7))
    hal.delete()
    assert StaleHour.objects.count() == 1
    assert_exact(since)
    sealed()
    assert set(TraceHour.objects.values_list("owner", flat=True)) == {None}
    assert_exact(since)


@pytest.mark.parametrize("key", list(stats.RANGES))
def test_the_charts_and_tables_are_the_same_read_from_rollups_or_from_the_traces(key):
    history()
    now = timezone.now()
    from_traces = stats.dashboard(rollups.everyone, stats.RANGES[key], now)
    sealed()
    from_rollups = stats.dashboard(rollups.everyone, stats.RANGES[key], now)
    assert RollupSeal.objects.get().sealed_until > from_rollups["since"]
    for name in ("chart", "totals", "models", "tools", "slowest_sql", "questions", "p50", "p95"):
        assert from_rollups[name] == from_traces[name], name


async def test_the_sweep_runs_with_its_owner_until_it_is_closed(monkeypatch):
    rounds = []
    monkeypatch.setattr(rollups, "sweep", lambda: rounds.append(1))
    sweep = rollups.RollupSweep(seconds=0.01)
    sweep.start()
    while len(rounds) < 2:
        await asyncio.sleep(0.01)
    await sweep.aclose()
    after = len(rounds)
    await asyncio.sleep(0.05)
    assert len(rounds) == after and sweep._task is None


def test_a_runtime_owns_a_sweep():
    from traces.runtime import Runtime

    assert isinstance(Runtime(kind="server").rollups, rollups.RollupSweep)
