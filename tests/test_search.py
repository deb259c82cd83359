"""Searching the history: a case-insensitive substring of the question or the answer, found
through the search index on SQLite (FTS5 trigrams) and MariaDB (Mroonga), kept in step with every
write; a term too short for the index, or a database without one, searches the newest traces only
and the page says so."""

from __future__ import annotations

import datetime as dt
import uuid
from urllib.parse import parse_qs

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from agents.events import EventType
from tests.factories import make_trace
from traces import protocol, search_index
from traces.models import Trace
from traces.pages.pagination import encode, keyset_page
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
    assert retention.prune(retention.prunable(dt.timedelta(days=30))).traces == 1
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
    call_command("migrate", "traces", "0010", verbosity=0)
    assert not search_index.has_index()
    assert found("about refunds") == {trace.request}  # by a scan
    call_command("migrate", "traces", "0011", verbosity=0)
    if connection.vendor == "sqlite" or connection.mysql_is_mariadb:
        assert search_index.has_index()
        assert Trace.objects.search_plan("about refunds").indexed
    assert found("about refunds") == {trace.request}


@pytest.mark.django_db(transaction=True)
def test_a_mariadb_without_mroonga_migrates_and_searches_by_a_scan(monkeypatch):
    if connection.vendor != "mysql":
        pytest.skip("MariaDB's index")
    trace = make_trace("How many orders shipped?")
    call_command("migrate", "traces", "0010", verbosity=0)
    monkeypatch.setattr(search_index, "mroonga_loaded", lambda cursor: False)
    call_command("migrate", "traces", "0011", verbosity=0)
    try:
        assert not search_index.has_index()
        assert found("orders") == {trace.request}
        assert not Trace.objects.search_plan("orders").indexed
    finally:
        monkeypatch.undo()
        call_command("migrate", "traces", "0010", verbosity=0)
        call_command("migrate", "traces", "0011", verbosity=0)
    assert search_index.has_index() == connection.mysql_is_mariadb


# -- a page of a search: the newest traces scanned first, the index asked for the rest -------------


def history(count: int) -> list[Trace]:
    """``count`` traces a second apart (every third pair at the same moment: the id breaks the tie),
    newest first: "orders" in every other one, "refund" in every 40th, "nowhere" in none."""
    now = timezone.now()
    traces = [
        Trace(
            id=uuid.uuid4(),
            name="sql_agent_execution",
            agent_name="sql_agent",
            request=f"How many ORDERS today? #{i}" if i % 2 == 0 else f"List the customers #{i}",
            final_response="A REFUND was made." if i % 40 == 7 else "Here are the rows.",
            status=Trace.Status.SUCCESS,
            started_at=now - dt.timedelta(seconds=i - i % 3 // 2),
            model="builtin",
            session_id=f"s{i % 7}",
        )
        for i in range(count)
    ]
    Trace.objects.bulk_create(traces)
    return list(Trace.objects.order_by("-started_at", "-id"))


def plainly(term: str) -> list[uuid.UUID]:
    """Every trace whose question or answer contains ``term``, newest first, without the index."""
    rows = Trace.objects.filter(Q(request__icontains=term) | Q(final_response__icontains=term))
    return list(rows.order_by("-started_at", "-id").values_list("pk", flat=True))


def every_page(term: str, size: int) -> list[list[uuid.UUID]]:
    """The pages of the search newest first, following each page's link to the older one."""
    pages, after, number = [], None, 1
    while True:
        page = keyset_page(Trace.objects.all(), after=after, before=None, number=number, size=size, search=term)
        pages.append([trace.pk for trace in page.items])
        if page.next_link is None:
            return pages
        link = parse_qs(page.next_link)
        after, number = link["after"][0], int(link["page"][0])


@pytest.fixture
def small_scan(monkeypatch):
    """The first scan of a search reads 30 traces, so a few hundred have a past the index answers;
    a term with more than 5 matches is common."""
    monkeypatch.setattr(search_index, "SCAN_FIRST", 30)
    monkeypatch.setattr(search_index, "FEW", 5)
    # Mroonga is not transactional: it still has the traces of the tests before, rolled back.
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {search_index.TABLE}")


@pytest.mark.parametrize("few", [5, 2000])  # "refund" common, or rare and looked up in the index at once
@pytest.mark.parametrize("term", ["orders", "refund", "nowhere", "ORDERS TODAY? #1"])
def test_the_pages_of_a_search_are_those_of_a_plain_substring_search(small_scan, monkeypatch, term, few):
    monkeypatch.setattr(search_index, "FEW", few)
    history(300)
    assert Trace.objects.search_plan(term).indexed
    expected = plainly(term)
    pages = every_page(term, 20)
    assert [pk for page in pages for pk in page] == expected
    assert all(len(page) == 20 for page in pages[:-1])


def test_a_page_back_is_the_page_that_was_shown(small_scan):
    history(300)
    for term in ("orders", "refund"):
        pages = every_page(term, 3)
        assert len(pages) >= 3
        first_of_third = Trace.objects.get(pk=pages[2][0])
        back = keyset_page(
            Trace.objects.all(), after=None, before=encode(first_of_third), number=2, size=3, search=term
        )
        assert [trace.pk for trace in back.items] == pages[1]
        assert back.number == 2 and back.total.more


def test_a_common_term_is_answered_by_the_scan_and_a_rare_one_by_the_index(small_scan, monkeypatch):
    traces = history(300)
    assert not search_index.more_than("refund", 8) and search_index.more_than("refund", 7)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {search_index.TABLE}")
    monkeypatch.setattr(search_index, "FEW", -1)  # every term is common: the index has none now
    # "orders" fills a page of 10 among the 30 newest traces: the index is not asked.
    rows, capped = Trace.objects.search_page("orders", 10)
    assert [trace.pk for trace in rows] == plainly("orders")[:10] and not capped
    # "refund" is in only one of the 30 newest: the others come from the index, which now has none.
    rows, capped = Trace.objects.search_page("refund", 10)
    assert [trace.pk for trace in rows] == [trace.pk for trace in traces[:30] if "REFUND" in trace.final_response]
    monkeypatch.setattr(search_index, "FEW", 2000)  # a rare term is looked up in the index alone
    assert Trace.objects.search_page("refund", 10) == ([], False)


def test_a_search_reads_at_most_id_limit_matches_from_the_index_and_says_so(small_scan, monkeypatch, admin_client):
    history(300)
    monkeypatch.setattr(search_index, "ID_LIMIT", 3)
    rows, capped = Trace.objects.search_page("refund", 20)
    assert capped and 3 <= len(rows) <= 4  # one among the scanned, three from the index
    assert {trace.pk for trace in rows} <= set(plainly("refund"))
    body = admin_client.get(reverse("traces:list"), {"q": "refund"}).content.decode()
    assert "data-search-capped" in body and "matches more than 3 traces" in body
    # In another order the page sorts only the matches read from the index, and says so too.
    body = admin_client.get(reverse("traces:list"), {"q": "refund", "sort": "oldest"}).content.decode()
    assert "data-search-capped" in body and body.count("A REFUND was made.") <= 3
    rows, capped = Trace.objects.search_page("orders", 10)  # from the scan
    assert not capped and [trace.pk for trace in rows] == plainly("orders")[:10]


def test_the_history_page_does_not_count_every_match_of_a_search(admin_client, small_scan):
    history(300)
    body = admin_client.get(reverse("traces:list"), {"q": "orders"}).content.decode()
    assert "Page 1 of 1+ · 50+ traces" in body
    body = admin_client.get(reverse("traces:list"), {"q": "refund"}).content.decode()
    assert "Page 1 of 1 · 8 traces" in body
