"""exporttraces, importtraces, prunetraces and replaytrace."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import subprocess
import sys
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from tests.factories import make_trace
from tests.servers import ROOT
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


def test_export_orders_by_start_time_then_id_the_same_on_every_database(monkeypatch):
    from traces.store import transfer

    monkeypatch.setattr(transfer, "CHUNK", 2)  # the order holds from one page to the next
    now = timezone.now()
    # Ids in an order of their own: first and last groups disagree (MariaDB's UUID type sorts by the last).
    starts = {
        "ffffffff-0000-4000-8000-000000000001": now - dt.timedelta(seconds=4),
        "00000001-0000-4000-8000-00000000000f": now - dt.timedelta(seconds=3),
        "00000000-0000-4000-8000-00000000000e": now - dt.timedelta(seconds=3),  # same start: by id
        "0000000f-0000-4000-8000-000000000000": now - dt.timedelta(seconds=3),
        "88888888-0000-4000-8000-000000000002": now - dt.timedelta(seconds=1),
        "11111111-0000-4000-8000-000000000003": now - dt.timedelta(seconds=2),
    }
    for trace_id, started in starts.items():
        make_trace(f"q {trace_id}", id=uuid.UUID(trace_id), started_at=started)
    expected = sorted(starts, key=lambda trace_id: (starts[trace_id], trace_id))
    assert [json.loads(line)["id"] for line in export().splitlines()] == expected
    rows = export("--format", "csv").splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == expected


def test_export_streams_in_chunks(django_assert_max_num_queries, monkeypatch):
    from traces.store import transfer

    monkeypatch.setattr(transfer, "CHUNK", 5)
    for i in range(12):
        make_trace(f"q{i}")
    chunks = transfer.export_jsonl(Trace.objects.all())
    first = next(chunks)  # only the first chunk has been read
    assert json.loads(first)["request"].startswith("q")
    assert len(list(chunks)) == 11


def test_export_reads_runs_and_events_per_chunk_not_per_trace(django_assert_num_queries, monkeypatch):
    from traces.store import transfer
    from traces.store.serializers import trace_document

    monkeypatch.setattr(transfer, "CHUNK", 5)
    traces = [make_trace(f"q{i}") for i in range(12)]
    # Per page of 5: where it ends, its traces, runs, events; the third page, short, was the last.
    with django_assert_num_queries(3 * 4):
        lines = list(transfer.export_jsonl(Trace.objects.all()))
    by_id = {json.loads(line)["id"]: json.loads(line) for line in lines}
    assert by_id == {
        str(t.pk): json.loads(json.dumps(trace_document(t)))
        for t in Trace.objects.filter(pk__in=[t.pk for t in traces])
    }


def test_export_pages_through_the_start_time_index_not_a_sort_of_every_trace(
    django_assert_max_num_queries, monkeypatch
):
    from traces.store import transfer

    monkeypatch.setattr(transfer, "CHUNK", 3)
    for i in range(7):
        make_trace(f"q{i}")
    with django_assert_max_num_queries(3 * 4) as captured:
        assert len(export().splitlines()) == 7
    reads = [query["sql"] for query in captured.captured_queries if "traces_trace" in query["sql"]]
    # Each page's traces are a range of start times ending at the third's, read first: nothing
    # to sort but the page (ordering by the id's text was a sort of all the traces left, for
    # every page).
    assert len(reads) == 6 and not any("CAST" in sql.upper() for sql in reads)
    assert [("LIMIT 1 OFFSET 2" in sql) for sql in reads] == [True, False] * 3


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_export_shows_progress_on_a_terminal_only(tmp_path):
    for i in range(3):
        make_trace(f"q{i}")
    target = str(tmp_path / "traces.jsonl")
    quiet = io.StringIO()
    call_command("exporttraces", "-o", target, stdout=io.StringIO(), stderr=quiet)
    assert quiet.getvalue().strip() == f"Wrote {target} (3 traces)"
    terminal = Terminal()
    call_command("exporttraces", "-o", target, stdout=io.StringIO(), stderr=terminal)
    assert "Exporting" in terminal.getvalue() and "3/3" in terminal.getvalue()


def another_trace(line: str) -> dict:
    """An exported trace as another trace: another id, and other ids for its runs."""
    document = json.loads(line)
    for old in [document["id"], *(run["id"] for run in document["runs"])]:
        line = line.replace(old, str(uuid.uuid4()))
    return json.loads(line)


def with_a_gap(line: str) -> str:
    """An exported trace with another id whose second event is missing."""
    document = another_trace(line)
    del document["events"][1]
    return json.dumps(document)


def test_import_says_which_line_is_wrong_instead_of_a_traceback(tmp_path):
    make_trace("kept")
    good = export()
    Trace.objects.all().delete()
    with pytest.raises(CommandError, match=r"cannot read .*missing\.jsonl: No such file or directory"):
        call_command("importtraces", str(tmp_path / "missing.jsonl"), stdout=io.StringIO())
    path = tmp_path / "traces.jsonl"
    for bad, problem in [
        ('{"request": "no id"}', 'no trace "id"'),
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"id": "nope"}', '"id" is not a trace id'),
        (json.dumps({"id": str(uuid.uuid4())}), "the trace has no events"),  # nothing to rebuild its rows from
        (with_a_gap(good), "its events cannot be stored: its seq 2 is missing"),
    ]:
        Trace.objects.all().delete()
        path.write_text(good + "\n" + bad + "\n")  # the bad line is line 3
        with pytest.raises(CommandError) as raised:
            call_command("importtraces", str(path), stdout=io.StringIO())
        message = str(raised.value)
        assert message.startswith(f"{path}, line 3: {problem}"), message
        assert message.endswith("(traces imported before it: 1)"), message
        # The trace before the bad line is in: importing again after a fix skips it.
        assert list(Trace.objects.values_list("request", flat=True)) == ["kept"]


def test_prune_deletes_old_finished_traces_in_batches(monkeypatch):
    from traces.store import retention

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


def test_prune_deletes_the_oldest_first_a_transaction_per_batch(monkeypatch):
    from traces.store import retention

    monkeypatch.setattr(retention, "BATCH", 2)
    monkeypatch.setattr(retention, "TRANSACTION_SECONDS", 3600.0)  # batches of 2 however slow the machine
    old = timezone.now() - dt.timedelta(days=40)
    # Ids in the opposite order to the ages: the batches follow the start times, not the ids.
    ages = [make_trace(f"old {i}", id=uuid.UUID(int=5 - i), started_at=old - dt.timedelta(hours=i)) for i in range(5)]
    left: list[set[str]] = []

    def after_batch(deleted: int) -> None:
        left.append(set(Trace.objects.values_list("request", flat=True)))

    pruned = retention.prune(retention.prunable(dt.timedelta(days=30)), progress=after_batch)
    assert left == [{"old 0", "old 1", "old 2"}, {"old 0"}, set()]
    assert (pruned.traces, pruned.batches) == (len(ages), 3) and pruned.longest > 0


@pytest.mark.parametrize(("seconds", "batches"), [(0.0, [4, 2, 1, 1]), (3600.0, [4, 4])])
def test_prune_halves_its_batches_while_their_transactions_are_too_long(monkeypatch, seconds, batches):
    from traces.store import retention

    monkeypatch.setattr(retention, "BATCH", 4)
    monkeypatch.setattr(retention, "TRANSACTION_SECONDS", seconds)
    for i in range(8):
        make_trace(f"old {i}", started_at=timezone.now() - dt.timedelta(days=40, hours=i))
    deleted: list[int] = []
    retention.prune(retention.prunable(dt.timedelta(days=30)), pause=0, progress=deleted.append)
    assert deleted == batches and not Trace.objects.exists()


def test_prune_shows_progress_on_a_terminal_and_its_longest_transaction_when_asked():
    for i in range(3):
        make_trace(f"old {i}", started_at=timezone.now() - dt.timedelta(days=40))
    quiet = io.StringIO()
    call_command("prunetraces", "--older-than", "30d", stdout=io.StringIO(), stderr=quiet)
    assert quiet.getvalue() == ""
    make_trace("old", started_at=timezone.now() - dt.timedelta(days=40))
    terminal, out = Terminal(), io.StringIO()
    call_command("prunetraces", "--older-than", "30d", "--verbosity", "2", stdout=out, stderr=terminal)
    assert "Deleting" in terminal.getvalue() and "1/1" in terminal.getvalue()
    assert re.search(r"In 1 batch; the longest held its transaction \d+ ms\.", out.getvalue())


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


def test_replaytrace_takes_a_unique_start_of_the_id():
    first = make_trace("first", id=uuid.UUID("abcd1234-0000-4000-8000-000000000001"))
    make_trace("second", id=uuid.UUID("abcd5678-0000-4000-8000-000000000002"))
    for given in ("abcd1", "ABCD1234-00", "abcd12340000", str(first.pk)):
        out = io.StringIO()
        call_command("replaytrace", given, stdout=out)
        assert f"trace {first.pk}" in out.getvalue().splitlines(), given
    with pytest.raises(CommandError, match=r"^2 traces have an id starting with abcd; give more of it$"):
        call_command("replaytrace", "abcd")
    with pytest.raises(CommandError, match=r"^no trace abce$"):
        call_command("replaytrace", "abce")
    with pytest.raises(CommandError, match=r"^no trace xyz: a trace id is hexadecimal digits and dashes$"):
        call_command("replaytrace", "xyz")


# Hostile or mistaken input: a one-line error and a non-zero exit, never a traceback.


def deep_line(depth: int) -> str:
    return '{"id": "' + str(uuid.uuid4()) + '", "events": ' + "[" * depth + "]" * depth + "}\n"


@pytest.fixture
def bad_inputs(tmp_path) -> dict[str, tuple[list[str], str]]:
    """Each command line that must fail, and the start of what it must say."""
    deep = tmp_path / "deep.jsonl"
    deep.write_text(deep_line(100_000))
    long = tmp_path / "long.jsonl"
    long.write_bytes(b'{"id": "' + b"x" * (30 * 1024 * 1024) + b'"}\n')
    return {
        "unwritable": (
            ["exporttraces", "-o", "/nonexistent/x"],
            "cannot write /nonexistent/x: No such file or directory",
        ),
        "far future": (["exporttraces", "--until", "9999-12-31"], "dates are YYYY-MM-DD from 0002-01-01 to 9998-12-31"),
        "far past": (["exporttraces", "--since", "0001-01-01"], "dates are YYYY-MM-DD from 0002-01-01 to 9998-12-31"),
        "huge age": (["prunetraces", "--older-than", "99999999999d"], "'99999999999d' is more than 100 years"),
        "deep": (["importtraces", str(deep)], f"{deep}, line 1: not JSON: nested deeper than"),
        "long line": (["importtraces", str(long)], f"{long}, line 1: longer than 16,777,216 bytes"),
        "endless": (["importtraces", "/dev/zero"], "/dev/zero, line 1: longer than 16,777,216 bytes"),
    }


@pytest.mark.parametrize("case", ["unwritable", "far future", "far past", "huge age", "deep", "long line", "endless"])
def test_a_bad_command_line_is_a_command_error(bad_inputs, case):
    args, message = bad_inputs[case]
    with pytest.raises(CommandError) as raised:
        call_command(*args, stdout=io.StringIO(), stderr=io.StringIO())
    assert str(raised.value).startswith(message), str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_bad_command_line_is_one_line_on_stderr_and_a_non_zero_exit(bad_inputs, tmp_path):
    env = {k: v for k, v in os.environ.items() if not re.match(r"^(DATABASE_URL|REDIS_URL|MYSQL_\w+)$", k)}
    env |= {"TRACESITE_ENV_FILE": "", "TRACESITE_DATA_DIR": str(tmp_path / "var")}
    for case, (args, message) in bad_inputs.items():
        result = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args], env=env, capture_output=True, text=True, timeout=120
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and len(lines) == 1, (case, result.stderr[-2000:])
        assert lines[0].startswith("CommandError: ") and message in lines[0], (case, lines)


# What an import takes: owners, and runs of the trace only.


def test_an_import_gives_each_trace_its_owner_if_that_user_is_here_or_the_one_asked_for(tmp_path, django_user_model):
    olga, omar = django_user_model.objects.create_user("olga"), django_user_model.objects.create_user("omar")
    make_trace("olga's", owner=olga)
    make_trace("nobody's")
    path = tmp_path / "traces.jsonl"
    path.write_text(export())
    assert {json.loads(line)["owner"] for line in path.read_text().splitlines()} == {"olga", None}

    def imported(*args) -> dict[str, str | None]:
        Trace.objects.all().delete()
        call_command("importtraces", str(path), *args, stdout=io.StringIO())
        return {t.request: t.owner.username if t.owner else None for t in Trace.objects.select_related("owner")}

    assert imported() == {"olga's": "olga", "nobody's": None}
    assert imported("--user", "omar") == {"olga's": "omar", "nobody's": "omar"}
    olga.delete()
    assert imported() == {"olga's": None, "nobody's": None}
    with pytest.raises(CommandError, match=r"^no user 'olga'$"):
        call_command("importtraces", str(path), "--user", "olga", stdout=io.StringIO())
    assert omar.pk  # unchanged by any of it


def test_an_import_refuses_runs_under_another_traces_run_or_with_its_ids(tmp_path, django_user_model):
    theirs = make_trace("someone else's", owner=django_user_model.objects.create_user("omar"))
    their_step = Run.objects.get(trace=theirs, parent__isnull=True)
    line = export().splitlines()[0]
    path = tmp_path / "traces.jsonl"

    adopted = another_trace(line)  # one of its runs says its parent is the other trace's step
    tool = next(e["data"] for e in adopted["events"] if e["event_type"] == "tool_started")
    tool["parent_run_id"] = str(their_step.pk)
    path.write_text(json.dumps(adopted) + "\n")
    with pytest.raises(CommandError, match=rf"line 1: run {tool['run_id']}: its parent {their_step.pk} is not a run"):
        call_command("importtraces", str(path), stdout=io.StringIO())

    taken = json.loads(line)  # the other trace's runs, under a new trace id
    taken["id"] = str(uuid.uuid4())
    for event in taken["events"]:
        event["trace_id"] = taken["id"]
    path.write_text(json.dumps(taken) + "\n")
    with pytest.raises(CommandError, match=r"line 1: run [0-9a-f-]+ is a run of another trace"):
        call_command("importtraces", str(path), stdout=io.StringIO())

    assert list(Trace.objects.values_list("request", flat=True)) == ["someone else's"]
    assert Run.objects.filter(trace=theirs).count() == 3 and their_step.children.count() == 2
