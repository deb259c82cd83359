"""exporttraces, importtraces, prunetraces and replaytrace."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from tests.factories import make_trace
from traces.models import Event, Run, Trace

pytestmark = pytest.mark.django_db


def export(*args) -> str:
    out = io.StringIO()
    call_command("exporttraces", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_export_then_import_into_an_empty_database_round_trips(tmp_path):
    a = make_trace("显示用户表的10条用户数据 🚀", metadata={"model": "builtin"})
    make_trace(
        "how many orders?", status=Trace.Status.ERROR, error="boom", rerun_of=a, feedback=-1, feedback_comment="nope"
    )
    first = export()
    assert len(first.splitlines()) == 2
    path = tmp_path / "traces.jsonl"
    path.write_text(first)

    Trace.objects.all().delete()
    assert not Run.objects.exists() and not Event.objects.exists()
    out = io.StringIO()
    call_command("importtraces", str(path), stdout=out)
    assert "Imported 2" in out.getvalue()
    assert export() == first  # identical

    out = io.StringIO()
    call_command("importtraces", str(path), stdout=out)
    assert "Imported 0 traces; 2 were already here" in out.getvalue()


def test_export_filters_and_writes_csv(tmp_path):
    make_trace("ok one")
    make_trace("bad one", status=Trace.Status.ERROR)
    make_trace("old one", started_at=timezone.now() - dt.timedelta(days=40))
    assert [json.loads(line)["request"] for line in export("--status", "error").splitlines()] == ["bad one"]
    since = (timezone.now() - dt.timedelta(days=10)).date().isoformat()
    assert len(export("--since", since).splitlines()) == 2
    target = tmp_path / "traces.csv"
    call_command("exporttraces", "--format", "csv", "-o", str(target), stdout=io.StringIO(), stderr=io.StringIO())
    lines = target.read_text().splitlines()
    assert lines[0].startswith("id,name,session_id") and len(lines) == 4
    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        export("--since", "yesterday")


def test_export_streams_in_chunks(django_assert_max_num_queries, monkeypatch):
    from traces import transfer

    monkeypatch.setattr(transfer, "CHUNK", 5)
    for i in range(12):
        make_trace(f"q{i}")
    chunks = transfer.export_jsonl(Trace.objects.all())
    first = next(chunks)  # only the first chunk has been read
    assert json.loads(first)["request"].startswith("q")
    assert len(list(chunks)) == 11


def test_export_reads_runs_and_events_per_chunk_not_per_trace(django_assert_num_queries, monkeypatch):
    from traces import transfer
    from traces.serializers import trace_document

    monkeypatch.setattr(transfer, "CHUNK", 5)
    traces = [make_trace(f"q{i}") for i in range(12)]
    with django_assert_num_queries(3 * 3 + 1):  # per chunk of 5: traces, runs, events; then an empty page
        lines = list(transfer.export_jsonl(Trace.objects.all()))
    by_id = {json.loads(line)["id"]: json.loads(line) for line in lines}
    assert by_id == {
        str(t.pk): json.loads(json.dumps(trace_document(t)))
        for t in Trace.objects.filter(pk__in=[t.pk for t in traces])
    }


def test_prune_deletes_old_finished_traces_in_batches(monkeypatch):
    from traces import retention

    monkeypatch.setattr(retention, "BATCH", 2)
    old = timezone.now() - dt.timedelta(days=40)
    for i in range(5):
        make_trace(f"old {i}", started_at=old)
    make_trace("old but running", started_at=old, status=Trace.Status.RUNNING)
    keep = make_trace("new")
    out = io.StringIO()
    call_command("prunetraces", "--older-than", "30d", "--dry-run", stdout=out)
    assert "Would delete 5" in out.getvalue() and Trace.objects.count() == 7
    call_command("prunetraces", "--older-than", "30d", stdout=io.StringIO())
    assert set(Trace.objects.values_list("request", flat=True)) == {"old but running", "new"}
    assert Run.objects.filter(trace=keep).exists() and Event.objects.filter(trace=keep).exists()
    with pytest.raises(CommandError, match="not an age"):
        call_command("prunetraces", "--older-than", "a month")


@pytest.mark.django_db(transaction=True)
def test_replaytrace_renders_a_stored_trace(configured_agent_db):
    call_command("runagent", "how many users?", "--quiet", stdout=io.StringIO())
    trace = Trace.objects.get()
    out = io.StringIO()
    call_command("replaytrace", str(trace.pk), stdout=out)
    text = out.getvalue()
    assert "how many users?" in text and "SELECT COUNT(*)" in text and "success" in text
    with pytest.raises(CommandError, match="no trace"):
        call_command("replaytrace", "00000000-0000-0000-0000-000000000000")
