"""The history list, the compare page and the dashboard: picking two traces to compare, costs,
page and total information for every order, where a search matched, the compare form, and the
dashboard's buckets, models and slowest queries."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tests.factories import make_trace
from traces import search_index
from traces.models import Run, Trace
from traces.pages import pagination
from traces.pages.forms import SORTS, excerpt
from traces.templatetags.figures import cost, number

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_rows_left_in_the_search_index():
    """Mroonga is not transactional: it keeps the index rows of other tests' rolled-back traces,
    which would count as matches here (the results stay right; the counts and plans would not)."""
    if connection.vendor == "mysql" and search_index.has_index():
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {search_index.TABLE}")


def bulk_traces(count: int, **fields) -> list[Trace]:
    now = timezone.now()
    return Trace.objects.bulk_create(
        [
            Trace(
                name="sql_agent_execution",
                agent_name="sql_agent",
                request=f"question {i}",
                status=Trace.Status.SUCCESS,
                started_at=now - dt.timedelta(minutes=i),
                duration_ms=1000 + i,
                total_tokens=10 * i,
                model="builtin",
                **fields,
            )
            for i in range(count)
        ]
    )


def trace(request: str, **fields) -> Trace:
    """``make_trace``, then any of its fixed fields (tokens, duration) set to other values."""
    fixed = {key: fields.pop(key) for key in ("total_tokens", "duration_ms") if key in fields}
    made = make_trace(request, **fields)
    Trace.objects.filter(pk=made.pk).update(**fixed)
    made.refresh_from_db()
    return made


def page_info(body: str) -> str:
    return re.search(r"<span data-page-info>(.*?)</span>", body).group(1)


def link(body: str, rel: str) -> str | None:
    found = re.search(rf'<a href="(\?[^"]*)" rel="{rel}">', body)
    return found.group(1).replace("&amp;", "&") if found else None


def rows(body: str) -> list[str]:
    return re.findall(r'data-trace-row="([0-9a-f-]+)"', body)


# The history list


def test_the_history_list_has_a_compare_form_that_sends_the_ticked_traces(client):
    a, b = make_trace("first"), make_trace("second")
    body = client.get(reverse("traces:list")).content.decode()
    assert f'action="{reverse("traces:compare")}" id="compare-picks"' in body
    for trace in (a, b):
        assert f'<input type="checkbox" name="trace" value="{trace.pk}" form="compare-picks"' in body
    assert "Compare selected" in body and "traces/history.js" in body

    response = client.get(reverse("traces:compare"), {"trace": [a.pk, b.pk]})  # what the form sends
    assert response.status_code == 302
    target = urlsplit(response["Location"])
    assert target.path == reverse("traces:compare")
    assert parse_qs(target.query) == {"a": [str(a.pk)], "b": [str(b.pk)]}
    compared = client.get(response["Location"]).content.decode()
    assert "first" in compared and "second" in compared and "Step 1" in compared


@pytest.mark.parametrize("ticked", [1, 3])
def test_ticking_other_than_two_traces_says_so_on_the_compare_page(client, ticked):
    traces = [make_trace(f"question {i}") for i in range(ticked)]
    response = client.get(reverse("traces:compare"), {"trace": [t.pk for t in traces]})
    body = response.content.decode()
    assert response.status_code == 400
    assert f"Tick exactly two traces to compare: {ticked} {'was' if ticked == 1 else 'were'} ticked." in body
    assert "data-compare-form" in body


def test_the_history_list_shows_each_traces_cost(client):
    make_trace("cheap", total_cost=Decimal("0.00123456"))
    make_trace("dear", total_cost=Decimal("2.5"))
    make_trace("free", total_cost=Decimal("0"))
    body = client.get(reverse("traces:list")).content.decode()
    assert '<th class="num">Cost</th>' in body
    assert '<td class="num">$0.0012</td>' in body and '<td class="num">$2.50</td>' in body
    assert '<td class="num">$0</td>' in body and "0.00123456" not in body


@pytest.mark.parametrize("sort", list(SORTS))
def test_every_order_shows_the_page_and_the_total_and_pages_through_all_traces(client, sort):
    bulk_traces(120)
    url, seen, infos = reverse("traces:list") + f"?sort={sort}", [], []
    while url:
        body = client.get(url).content.decode()
        seen += rows(body)
        infos.append(page_info(body))
        following = link(body, "next")
        url = reverse("traces:list") + following if following else None
    assert infos == ["Page 1 of 3 · 120 traces", "Page 2 of 3 · 120 traces", "Page 3 of 3 · 120 traces"]
    assert len(seen) == len(set(seen)) == 120
    # and back: the previous page from the last is the second one, with the same rows
    back = client.get(reverse("traces:list") + link(body, "prev")).content.decode()
    assert page_info(back) == "Page 2 of 3 · 120 traces" and rows(back) == seen[50:100]
    first = client.get(reverse("traces:list") + link(back, "prev")).content.decode()
    assert page_info(first) == "Page 1 of 3 · 120 traces" and rows(first) == seen[:50]


def test_newest_first_pages_by_keyset_and_a_page_number_alone_jumps(client):
    bulk_traces(120)
    body = client.get(reverse("traces:list")).content.decode()
    following = link(body, "next")
    assert "after=" in following and "page=2" in following  # keyset, numbered in the link
    jumped = client.get(reverse("traces:list"), {"page": 3}).content.decode()
    assert page_info(jumped) == "Page 3 of 3 · 120 traces" and len(rows(jumped)) == 20
    past = client.get(reverse("traces:list"), {"page": 99, "sort": "tokens"}).content.decode()
    assert page_info(past) == "Page 3 of 3 · 120 traces"  # past the end: the last page


def test_the_count_stops_at_its_limit_and_says_there_are_more(client, monkeypatch):
    monkeypatch.setattr(pagination, "COUNT_LIMIT", 100)
    bulk_traces(120)
    for query in ({}, {"sort": "slowest"}, {"status": "success"}):
        with CaptureQueriesContext(connection) as queries:
            body = client.get(reverse("traces:list"), query).content.decode()
        assert page_info(body) == "Page 1 of 2+ · 100+ traces", query
        (count,) = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
        assert "LIMIT 101" in count


# The datasets the page's "Add to dataset" offers (evals.context_processors): one query more.
DATASET_CHOICES = 1


def test_a_short_first_page_is_its_own_count(client, django_assert_num_queries):
    bulk_traces(7)
    search_index.has_index()  # whether the database has the index is read once per process
    # The index's count of the term (it is rare: its page comes from the index alone), then the page.
    with django_assert_num_queries(2 + DATASET_CHOICES):
        body = client.get(reverse("traces:list"), {"q": "question"}).content.decode()
    assert page_info(body) == "Page 1 of 1 · 7 traces"


@pytest.mark.parametrize(
    "query",
    ["", "?sort=oldest", "?sort=slowest&page=7", "?page=12", "?sort=tokens&q=question", "?q=question&page=3"],
)
def test_the_page_and_count_cost_a_constant_number_of_queries(client, django_assert_max_num_queries, query):
    bulk_traces(1200)
    body = client.get(reverse("traces:list") + query).content.decode()
    deeper = link(body, "next")
    # A search in another order asks the index once more: whether it has more than it read.
    searched = 1 if "q=" in query else 0
    for url in (query, deeper):
        with django_assert_max_num_queries(2 + searched + DATASET_CHOICES):
            response = client.get(reverse("traces:list") + url)
        assert response.status_code == 200 and "1,200 traces" in page_info(response.content.decode())


def test_a_search_shows_where_it_matched_with_the_match_marked(client):
    make_trace("How many <b>Orders</b> per country?", final_response="Canada leads.")
    make_trace("top products", final_response="The best seller has " + "many " * 40 + "orders, then hats.")
    make_trace("users", final_response="No orders here? <script>alert(1)</script> orders")
    body = client.get(reverse("traces:list"), {"q": "orders"}).content.decode()
    assert "How many &lt;b&gt;<mark>Orders</mark>&lt;/b&gt; per country?" in body  # its own case, escaped
    assert '<div class="search-match" data-matched="question">' in body
    assert '<div class="search-match" data-matched="answer">' in body
    assert re.search(r'<span class="excerpt">…(many ){5,20}<mark>orders</mark>, then hats.</span>', body)
    assert (
        "No <mark>orders</mark> here? &lt;script&gt;alert(1)&lt;/script&gt; <mark>orders</mark>" in body
        and "<script>alert(1)" not in body
    )
    plain = client.get(reverse("traces:list")).content.decode()
    assert "<mark>" not in plain and "search-match" not in plain


def test_an_excerpt_cuts_the_text_around_the_first_match_and_marks_every_match():
    text = "a" * 200 + " Revenue\n\nby   region: revenue " + "z" * 300
    parts = excerpt(text, "REVENUE", width=60)
    assert parts[0] == ("…", False) and parts[-1] == ("…", False)
    assert [piece for piece, hit in parts if hit] == ["Revenue", "revenue"]
    assert "".join(piece for piece, _ in parts).count(" by region: ") == 1  # whitespace runs as one space
    assert excerpt("nothing here", "orders") == []
    assert excerpt("a.b*c", ".b*") == [("a", False), (".b*", True), ("c", False)]  # the term is text, not a pattern


# The compare page


def test_the_compare_page_passes_the_answers_to_the_markdown_renderer(client):
    a = make_trace("q", final_response="**Total**: 3\n\n| country | orders |\n|---|---|\n| Canada | 3 |")
    b = make_trace("q", final_response='<img src=x onerror="alert(1)">')
    body = client.get(reverse("traces:compare"), {"a": a.pk, "b": b.pk}).content.decode()
    data = json.loads(body.split('<script id="compare-answers" type="application/json">')[1].split("</script>")[0])
    assert data == {"a": a.final_response, "b": b.final_response}
    assert "traces/compare.js" in body
    assert "&lt;img src=x" in body and "<img src=x" not in body  # the text without script, escaped


def test_without_two_traces_the_compare_page_asks_for_them(client):
    recent = make_trace("a recent question")
    response = client.get(reverse("traces:compare"))
    body = response.content.decode()
    assert response.status_code == 200 and "data-compare-form" in body
    assert 'name="a"' in body and 'name="b"' in body and 'list="recent-traces"' in body
    assert f'<option value="{recent.pk}">' in body and "a recent question" in body


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ({"a": "{a}"}, 400, "Choose trace B."),
        ({"b": "{a}"}, 400, "Choose trace A."),
        ({"a": "not-an-id", "b": "{a}"}, 400, "“not-an-id” is not a trace id"),
        ({"a": "abc", "b": "{a}"}, 400, "at least its first 4 characters"),
        ({"a": "{a}", "b": "00000000-0000-4000-8000-000000000000"}, 404, "No trace has the id “00000000-0000-4000"),
        ({"a": "ffffffff", "b": "{a}"}, 404, "No trace has an id starting with “ffffffff”."),
    ],
)
def test_a_bad_or_unknown_id_is_said_on_the_form(client, query, status, message):
    a = make_trace("question a", id=uuid.UUID("12345678-0000-4000-8000-000000000001"))
    response = client.get(reverse("traces:compare"), {k: v.format(a=a.pk) for k, v in query.items()})
    body = response.content.decode()
    assert response.status_code == status
    assert message in body and "data-compare-form" in body and 'class="field-error"' in body
    assert "compare-answers" not in body


def test_a_trace_can_be_given_by_the_first_characters_of_its_id(client):
    a = make_trace("question a", id=uuid.UUID("abcd1234-0000-4000-8000-000000000001"))
    make_trace("question b", id=uuid.UUID("abcd9999-0000-4000-8000-000000000002"))
    c = make_trace("question c", id=uuid.UUID("12345678-0000-4000-8000-000000000003"))
    response = client.get(reverse("traces:compare"), {"a": "ABCD-1234", "b": "1234"})
    assert response.status_code == 200
    assert response.context["a"] == a and response.context["b"] == c
    ambiguous = client.get(reverse("traces:compare"), {"a": "abcd", "b": "1234"})
    assert ambiguous.status_code == 400
    assert "More than one trace has an id starting with “abcd”: give more of it." in ambiguous.content.decode()


def test_someone_elses_trace_is_an_unknown_id(client, settings, django_user_model):
    settings.TRACE_REQUIRE_AUTH = True
    owner, other = django_user_model.objects.create_user("hal"), django_user_model.objects.create_user("ivy")
    mine, theirs = make_trace("mine", owner=other), make_trace("secret", owner=owner)
    client.force_login(other)
    response = client.get(reverse("traces:compare"), {"a": mine.pk, "b": str(theirs.pk)[:8]})
    assert response.status_code == 404 and "No trace has an id starting with" in response.content.decode()
    assert "secret" not in response.content.decode()


# The dashboard


def chart(response) -> dict:
    return response.context["chart"]


@pytest.mark.parametrize(("key", "buckets", "seconds"), [("24h", 24, 3600), ("7d", 7, 86400), ("90d", 90, 86400)])
def test_the_charts_have_every_bucket_of_the_range(client, key, buckets, seconds):
    make_trace("now", started_at=timezone.now())
    make_trace("two buckets ago", started_at=timezone.now() - dt.timedelta(seconds=2 * seconds))
    make_trace("before the range", started_at=timezone.now() - dt.timedelta(seconds=(buckets + 1) * seconds))
    data = chart(client.get(reverse("traces:dashboard"), {"range": key}))
    assert len(data["x"]) == buckets and data["bucket_seconds"] == seconds
    assert {b - a for a, b in zip(data["x"], data["x"][1:], strict=False)} == {seconds}
    assert data["x"][-1] <= timezone.now().timestamp() < data["x"][-1] + seconds  # ends with the current one
    assert data["status"]["success"] == [0] * (buckets - 3) + [1, 0, 1]  # zero where nothing ran
    assert data["time_zone"] == "UTC"


def test_the_dashboard_breaks_traces_tokens_and_cost_down_by_model(client):
    trace("a", model="builtin", total_cost=Decimal("0"))
    trace("b", model="gpt-4o-mini", total_cost=Decimal("0.01000001"), total_tokens=500)
    trace("c", model="gpt-4o-mini", status=Trace.Status.ERROR, total_cost=Decimal("0.02"), total_tokens=700)
    response = client.get(reverse("traces:dashboard"), {"range": "7d"})
    data = chart(response)
    assert data["models"] == ["gpt-4o-mini", "builtin"]
    assert [sum(values) for values in data["traces"]] == [2, 1]
    assert [sum(values) for values in data["tokens"]] == [1200, 120]
    assert [round(sum(values), 6) for values in data["cost"]] == [0.030000, 0.0]
    body = response.content.decode()
    row = re.search(r'<tr data-model="gpt-4o-mini">(.*?)</tr>', body).group(1)
    assert re.findall(r'<td class="num">(.*?)</td>', row) == ["2", "1 (50%)", "1,200", "$0.0300", "2,000"]


def test_models_past_the_sixth_are_one_series(client):
    for i in range(9):
        make_trace(f"q{i}", model=f"model-{i}", runs=0)
    data = chart(client.get(reverse("traces:dashboard")))
    assert len(data["models"]) == 7 and data["models"][-1] == "other models"
    assert sum(sum(values) for values in data["traces"]) == 9


def test_the_slowest_sql_includes_failed_and_timed_out_queries_marked_as_such(client):
    trace = make_trace("slow ones", runs=0)
    step = trace.runs.get()
    for name, status, error_type, ms, sql in [
        ("run_sql", Run.Status.SUCCESS, "", 120, "SELECT 1"),
        ("run_sql", Run.Status.ERROR, "QueryTimeout", 5009, "SELECT SLOW"),
        ("run_sql", Run.Status.ERROR, "OperationalError", 300, "SELECT broken"),
        ("describe_schema", Run.Status.SUCCESS, "", 9000, ""),
    ]:
        Run.objects.create(
            trace=trace,
            parent=step,
            name=name,
            run_type=Run.Type.TOOL,
            status=status,
            error_type=error_type,
            error="stopped" if error_type else "",
            start_time=trace.started_at,
            duration_ms=ms,
            inputs={"sql": sql},
            outputs={"sql": sql, "guard": "allowed"} if status == Run.Status.SUCCESS else {},
        )
    body = client.get(reverse("traces:dashboard")).content.decode()
    table = body.split('<table class="slowest-sql">')[1].split("</table>")[0]
    assert re.findall(r'<tr data-outcome="([^"]+)">', table) == ["timed out", "failed", "ok"]
    assert ">5,009</a>" in table and "<code>SELECT SLOW</code>" in table and "<code>SELECT broken</code>" in table
    assert ">timed out</span>" in table and ">failed</span>" in table


def test_the_dashboard_shows_no_long_decimals(client):
    for i in range(3):
        trace(f"q{i}", total_cost=Decimal("0.10000001") * (i + 1), duration_ms=1000 + i, runs=1)
    for run, ms in zip(Run.objects.filter(run_type=Run.Type.TOOL), [7, 7, 8], strict=True):
        Run.objects.filter(pk=run.pk).update(duration_ms=ms)  # an average of 7.333…
    body = client.get(reverse("traces:dashboard")).content.decode()
    assert not re.findall(r"\d\.\d{7,}", body), re.findall(r".{20}\d\.\d{7,}.{5}", body)
    assert ">$0.6000</span>" in body  # the total cost card


def test_numbers_and_costs_are_rounded_for_reading():
    assert number(3098082.8100000042) == "3,098,082.81"
    assert number(7.333333, 0) == "7" and number(1200.0, 0) == "1,200" and number(5009) == "5,009"
    assert number(None) == ""
    assert cost(Decimal("0.00123456")) == "$0.0012" and cost(Decimal("1234.5")) == "$1,234.50"
    assert cost(0) == "$0" and cost(Decimal("0.00000004")) == "<$0.0001" and cost(None) == ""


def test_the_dashboard_is_a_constant_number_of_queries(client, django_assert_max_num_queries):
    traces = bulk_traces(1200, total_cost=Decimal("0.001"))
    for i, trace in enumerate(traces[:50]):
        Trace.objects.filter(pk=trace.pk).update(model=f"model-{i % 9}")
    for key in ("24h", "7d", "90d"):
        with django_assert_max_num_queries(6):
            assert client.get(reverse("traces:dashboard"), {"range": key}).status_code == 200


@pytest.mark.parametrize("sort", ["", "tokens"])
def test_a_page_number_past_the_last_page_is_the_last_page_or_not_found(client, monkeypatch, sort):
    bulk_traces(120)
    huge = "999999999999999999999"
    body = client.get(reverse("traces:list"), {"page": huge, "sort": sort}).content.decode()
    assert page_info(body) == "Page 3 of 3 · 120 traces" and len(rows(body)) == 20
    for odd in ("-99999999999999999999999", "1e9", "two"):
        body = client.get(reverse("traces:list"), {"page": odd, "sort": sort}).content.decode()
        assert page_info(body) == "Page 1 of 3 · 120 traces", odd
    # Past the count's limit the last page is not known: a page past the end is not found.
    monkeypatch.setattr(pagination, "COUNT_LIMIT", 100)
    assert client.get(reverse("traces:list"), {"page": huge, "sort": sort}).status_code == 404
    assert client.get(reverse("traces:list"), {"page": 4, "sort": sort}).status_code == 404
    body = client.get(reverse("traces:list"), {"page": 3, "sort": sort}).content.decode()
    assert page_info(body) == "Page 3 of 2+ · 100+ traces" and len(rows(body)) == 20


# A session's page


def test_it_pages_a_session_newest_first_under_the_totals_of_all_its_traces(client, django_assert_max_num_queries):
    made = bulk_traces(120, session_id="busy", total_cost=Decimal("0.01"))  # question 0 is the newest
    Trace.objects.filter(pk__in=[t.pk for t in made[::20]]).update(status=Trace.Status.ERROR)
    bulk_traces(3, session_id="other")
    url = reverse("traces:session", args=["busy"])
    seen: list[str] = []
    query: str | None = ""
    while query is not None:
        with django_assert_max_num_queries(4):  # totals, a page; the session row and user of the middleware
            body = client.get(url + query).content.decode()
        assert "120 traces · 71,400 tokens · $1.20 · 6 errors" in body
        assert len(rows(body)) <= 50
        seen += rows(body)
        query = link(body, "next")
    assert seen == [str(t.pk) for t in made]
    assert page_info(body) == "Page 3 of 3"
    newer = client.get(url + link(body, "prev")).content.decode()
    assert rows(newer) == [str(t.pk) for t in made[50:100]] and page_info(newer) == "Page 2 of 3"
    assert client.get(reverse("traces:session", args=["nobody"])).status_code == 404


def test_it_sums_a_huge_session_no_further_than_the_count_limit(client, monkeypatch):
    monkeypatch.setattr(pagination, "COUNT_LIMIT", 100)
    made = bulk_traces(120, session_id="busy", total_cost=Decimal("0.01"))
    Trace.objects.filter(pk__in=[t.pk for t in made[::20]]).update(status=Trace.Status.ERROR)
    body = client.get(reverse("traces:session", args=["busy"])).content.decode()
    assert "100+ traces · the newest 100: 49,500 tokens · $1.00 · 5 errors" in body
    assert rows(body) == [str(t.pk) for t in made[:50]] and page_info(body) == "Page 1 of 2+"
