"""Searching the history: a case-insensitive substring of the question or the answer, found
through the search index on SQLite (FTS5 trigrams) and MariaDB (Mroonga), kept in step with every
write; a term too short for the index, or a database without one, searches the newest traces only
and the page says so."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from agents.events import EventType
from tests.factories import make_trace
from traces import protocol, search_index
from traces.models import Trace
from traces.store import retention
from traces.store.writer import Numbered, store_now

pytestmark = pytest.mark.django_db

OPERATORS = ['say "hi" twice', "a*b*c", "this OR that", "x-ray -vision", "NEAR(a b)", "back\\slash"]


def found(term: str) -> set[str]:
    return set(Trace.objects.search(term).values_list("request", flat=True))


def indexed_rows() -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {search_index.TABLE}")
        return cursor.fetchone()[0]


def complete(trace: Trace, answer: str) -> None:
    """The trace's end arrives, as the store receives it: the projection writes its answer."""
    data = {
        "trace_id": str(trace.pk),
        "duration_ms": 10,
        "total_runs": 3,
        "status": "success",
        "final_response": answer,
    }
    moment = timezone.now()
    message = protocol.envelope(
        EventType.TRACE_COMPLETED,
        data,
        session_id=trace.session_id,
        timestamp=moment,
        trace_id=trace.pk,
        seq=trace.last_seq + 1,
    )
    numbered = Numbered(
        trace.pk,
        trace.last_seq + 1,
        EventType.TRACE_COMPLETED,
        moment,
        message["message_id"],
        protocol.dumps(message),
        data,
    )
    assert not store_now([numbered]).failed


@pytest.fixture
def no_index(monkeypatch):
    """A database without the index (MySQL, a MariaDB without Mroonga), as the search sees it."""
    monkeypatch.setattr(search_index, "has_index", lambda using="default": False)


def test_it_has_the_index_on_sqlite_and_mariadb():
    if connection.vendor == "sqlite" or connection.mysql_is_mariadb:
        assert search_index.has_index()


def test_it_finds_english_substrings_whatever_the_case():
    make_trace("How many ORDERS shipped last week?", final_response="There were 42 orders.")
    make_trace("List the customers")
    assert found("orders") == {"How many ORDERS shipped last week?"}
    assert found("RDERS SHIP") == {"How many ORDERS shipped last week?"}
    assert found("ere 42 ord") == {"How many ORDERS shipped last week?"}  # in the answer
    assert found("CUSTOMER") == {"List the customers"}
    assert Trace.objects.search_plan("orders").indexed


def test_it_finds_chinese_substrings():
    make_trace("显示用户表的10条用户数据", final_response="共 10 行")
    make_trace("列出所有订单")
    assert found("用户数据") == {"显示用户表的10条用户数据"}
    assert found("户表的") == {"显示用户表的10条用户数据"}
    assert found("所有订单") == {"列出所有订单"}


def test_one_and_two_character_terms_still_find_traces():
    make_trace("显示用户表的10条用户数据")
    make_trace("How many orders?")
    assert found("用") == {"显示用户表的10条用户数据"}
    assert found("订") == set()
    assert found("OR") == {"How many orders?"}
    assert found("y") == {"How many orders?"}


def test_short_terms_are_searched_through_the_index_only_where_it_serves_them():
    plan = Trace.objects.search_plan("用")
    assert not plan.indexed
    if connection.vendor == "sqlite":
        assert plan.min_length == 3 and not Trace.objects.search_plan("ab").indexed
        assert Trace.objects.search_plan("abc").indexed
    else:
        assert plan.min_length == 2 and Trace.objects.search_plan("ab").indexed == search_index.has_index()


def test_a_term_that_matches_nothing_finds_nothing():
    make_trace("How many orders?")
    assert found("zebra crossing") == set()
    assert found("斑马") == set()


def test_quotes_and_operators_in_the_term_are_text():
    for text in OPERATORS:
        make_trace(text)
    assert found('"hi"') == {'say "hi" twice'}
    assert found('say "') == {'say "hi" twice'}
    assert found("a*b") == {"a*b*c"}
    assert found("s OR t") == {"this OR that"}
    assert found("-vision") == {"x-ray -vision"}
    assert found("NEAR(a") == {"NEAR(a b)"}
    assert found("k\\sl") == {"back\\slash"}
    assert found('"') == {'say "hi" twice'}
    assert found("*") == {"a*b*c"}


def test_the_index_decides_what_long_terms_find():
    make_trace("How many orders?")
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {search_index.TABLE}")
    assert found("orders") == set()  # not a scan: the index no longer knows it


def test_the_index_follows_inserts_updates_and_answers_that_come_later():
    running = make_trace("Which products sold best?", status=Trace.Status.RUNNING)
    assert found("products sold") == {"Which products sold best?"}
    assert found("Widget Deluxe") == set()
    complete(running, "The Widget Deluxe sold best.")
    assert Trace.objects.get(pk=running.pk).final_response == "The Widget Deluxe sold best."
    assert found("widget deluxe") == {"Which products sold best?"}
    Trace.objects.filter(pk=running.pk).update(final_response="The Gizmo sold best.")
    assert found("widget deluxe") == set()
    assert found("gizmo") == {"Which products sold best?"}
    stored = Trace.objects.get(pk=running.pk)
    stored.request = "Which gadgets sold best?"
    stored.save()
    assert found("products sold") == set()
    assert found("gadgets sold") == {"Which gadgets sold best?"}


def test_the_index_forgets_deleted_and_pruned_traces():
    old = make_trace("An old question about invoices", started_at=timezone.now() - dt.timedelta(days=40))
    deleted = make_trace("A question about invoices to delete")
    kept = make_trace("A new question about invoices")
    before = indexed_rows()
    Trace.objects.filter(pk=deleted.pk).delete()
    assert retention.prune(retention.prunable(dt.timedelta(days=30))) == 1
    assert found("about invoices") == {kept.request}
    assert indexed_rows() == before - 2
    assert not Trace.objects.filter(pk__in=[old.pk, deleted.pk]).exists()


def test_a_scan_reads_only_the_newest_traces(monkeypatch, no_index):
    monkeypatch.setitem(search_index.SCAN_ROWS, connection.vendor, 2)
    now = timezone.now()
    for minutes, text in ((3, "oldest orders"), (2, "older orders"), (1, "newest orders")):
        make_trace(text, started_at=now - dt.timedelta(minutes=minutes))
    make_trace("newest of all, about hats", started_at=now)
    assert found("orders") == {"newest orders"}
    assert found("hats") == {"newest of all, about hats"}


def test_a_scan_reads_every_trace_when_there_are_fewer(no_index):
    make_trace("How many orders?")
    assert found("orders") == {"How many orders?"}
    assert found("用") == set()


def test_the_history_page_says_when_a_search_is_partial(admin_client, monkeypatch):
    shown = str(make_trace("显示用户表的10条用户数据").pk)
    body = admin_client.get(reverse("traces:list"), {"q": "用户数据"}).content.decode()
    assert "data-search-partial" not in body and shown in body
    body = admin_client.get(reverse("traces:list"), {"q": "用"}).content.decode()
    assert shown in body
    assert "data-search-partial" in body
    if connection.vendor == "sqlite":
        assert "Showing matches among the newest 100,000 traces only" in body
        assert "a term of 3 characters or more searches the whole history" in body
    monkeypatch.setattr(search_index, "has_index", lambda using="default": False)
    body = admin_client.get(reverse("traces:list"), {"q": "用户数据"}).content.decode()
    assert shown in body
    assert "this database has no search index" in body


@pytest.mark.django_db(transaction=True)
def test_the_migration_is_reversible_and_fills_the_index_from_the_traces():
    trace = make_trace(f"A question about refunds {uuid.uuid4().hex}")
    call_command("migrate", "traces", "0009", verbosity=0)
    assert not search_index.has_index()
    assert found("about refunds") == {trace.request}  # by a scan
    call_command("migrate", "traces", "0010", verbosity=0)
    if connection.vendor == "sqlite" or connection.mysql_is_mariadb:
        assert search_index.has_index()
        assert Trace.objects.search_plan("about refunds").indexed
    assert found("about refunds") == {trace.request}


@pytest.mark.django_db(transaction=True)
def test_a_mariadb_without_mroonga_migrates_and_searches_by_a_scan(monkeypatch):
    if connection.vendor != "mysql":
        pytest.skip("MariaDB's index")
    trace = make_trace("How many orders shipped?")
    call_command("migrate", "traces", "0009", verbosity=0)
    monkeypatch.setattr(search_index, "mroonga_loaded", lambda cursor: False)
    call_command("migrate", "traces", "0010", verbosity=0)
    try:
        assert not search_index.has_index()
        assert found("orders") == {trace.request}
        assert not Trace.objects.search_plan("orders").indexed
    finally:
        monkeypatch.undo()
        call_command("migrate", "traces", "0009", verbosity=0)
        call_command("migrate", "traces", "0010", verbosity=0)
    assert search_index.has_index() == connection.mysql_is_mariadb
