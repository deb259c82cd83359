"""The history, detail, compare, feedback, session and dashboard pages."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from tests.factories import make_agent_trace, make_trace
from traces import search_index
from traces.models import Run, Trace

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_rows_left_in_the_search_index():
    """Mroonga is not transactional: it keeps the index rows of other tests' rolled-back traces,
    which would count as matches here (the results stay right; the counts and plans would not)."""
    if connection.vendor == "mysql" and search_index.has_index():
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {search_index.TABLE}")


def bulk_traces(count: int) -> None:
    now = timezone.now()
    Trace.objects.bulk_create(
        [
            Trace(
                name="sql_agent_execution",
                agent_name="sql_agent",
                request=f"question {i} 订单 {'用户' if i % 3 == 0 else ''}",
                status=[Trace.Status.SUCCESS, Trace.Status.ERROR][i % 2],
                started_at=now - dt.timedelta(minutes=i),
                duration_ms=100 + i,
                model="builtin",
                source="websocket",
                session_id=f"s{i % 7}",
                total_tokens=i,
            )
            for i in range(count)
        ]
    )


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?after=2000-01-01T00:00:00%2B00:00~00000000000000000000000000000000",
        "?q=订单",
        "?status=error",
        "?sort=slowest",
        "?page=15",
        "?min_ms=500&has_error=on",
        "?since=2000-01-01&until=2100-01-01&model=builtin&source=websocket&session=s3&feedback=none",
    ],
)
def test_the_history_list_is_a_constant_number_of_queries(client, django_assert_max_num_queries, query):
    bulk_traces(1200)
    search_index.has_index()  # whether the database has the search index is read once per process
    with django_assert_max_num_queries(4):
        response = client.get(reverse("traces:list") + query)
    assert response.status_code == 200


def test_it_searches_chinese_and_english_and_filters(client):
    make_trace("显示用户表的10条用户数据", final_response="共 10 行")
    make_trace("how many orders per country?", final_response="Canada leads", status=Trace.Status.ERROR, error="boom")
    make_trace("top 5 products by price", source=Trace.Source.CLI, feedback=1)

    def page(**q):
        return client.get(reverse("traces:list"), q).content.decode()

    assert "显示<mark>用户表</mark>" in page(q="用户表") and "how many orders" not in page(q="用户表")
    assert "how many orders" in page(q="Canada")
    assert "how many orders" in page(has_error="on") and "显示用户表" not in page(has_error="on")
    assert "top 5 products" in page(source="cli") and "显示用户表" not in page(source="cli")
    assert "top 5 products" in page(feedback="up") and "how many orders" not in page(feedback="up")
    assert "No traces match" in page(since="2999-01-01")
    assert client.get(reverse("traces:list"), {"since": "not-a-date"}).status_code == 200  # ignored, not an error


@pytest.mark.parametrize(
    "bad",
    [{"until": "9999-12-31"}, {"since": "0001-01-01"}, {"min_ms": "abc"}, {"status": "bogus"}, {"since": "notadate"},
     {"sort": "sideways"}, {"feedback": "maybe"}],
)  # fmt: skip
def test_a_bad_filter_value_is_shown_as_its_error_and_the_other_filters_still_apply(client, bad):
    make_trace("how many orders per country?", final_response="Canada leads", status=Trace.Status.ERROR, error="x")
    make_trace("how many users are there?", final_response="3 users", status=Trace.Status.ERROR, error="y")
    make_trace("how many orders per month?", final_response="12", source=Trace.Source.CLI)
    response = client.get(reverse("traces:list"), {"q": "orders", "status": "error", **bad})
    assert response.status_code == 200
    body = response.content.decode()
    (field,) = bad
    assert response.context["form"].errors[field]  # said, next to the field
    assert 'class="field-error"' in body
    if field != "status":  # the search and the valid status filter still apply
        assert "per country" in body and "users are there" not in body and "per month" not in body
    else:  # the search still applies
        assert "per country" in body and "per month" in body and "users are there" not in body


def test_it_paginates_by_keyset_by_default_and_by_page_number_on_request(client):
    bulk_traces(120)
    url, seen = reverse("traces:list"), []
    for _ in range(3):
        body = client.get(url).content.decode()
        seen += [line for line in body.split("data-trace-row")[1:]]
        older = body.split('href="?&amp;after=')
        if len(older) < 2:
            break
        url = reverse("traces:list") + "?after=" + older[1].split('"')[0].replace("&amp;", "&")
    assert len(seen) == 120 and "Older" not in body  # three pages of 50, 50, 20; all rows once
    assert "question 119" in body
    third = client.get(reverse("traces:list"), {"page": 3}).content.decode()
    assert "question 119" in third and "question 0 " not in third and "Page 3 of 3" in third
    assert client.get(reverse("traces:list"), {"after": "garbage"}).status_code == 200  # first page


def test_a_trace_of_another_agent_has_no_run_again(client):
    """Run again starts the built-in agent: not what produced a trace sent over OTLP."""
    native = make_trace("how many users?")
    ingested = make_trace("how many users?", source=Trace.Source.OTEL)
    assert "data-rerun" in client.get(reverse("traces:detail", args=[native.pk])).content.decode()
    assert "data-rerun" not in client.get(reverse("traces:detail", args=[ingested.pk])).content.decode()


def test_the_detail_page_carries_the_first_screen_of_its_run_tree_not_its_events(client):
    """The page draws the tree and the waterfall from the first pages of the trace's rows it
    embeds, and loads the rest and the events as they are wanted (traces.pages.tree;
    tests/test_browser_trace.py shows them drawn)."""
    trace = make_trace("<b>bold?</b> 显示用户表的10条用户数据")
    body = client.get(reverse("traces:detail", args=[trace.pk])).content.decode()
    assert "&lt;b&gt;bold?&lt;/b&gt;" in body and "<b>bold?</b>" not in body
    assert f"<dt>Runs</dt><dd>{Run.objects.filter(trace=trace).count()}</dd>" in body
    assert 'id="trace-events"' not in body and "data-spans" in body and "data-axis" in body
    tree = json.loads(body.split('id="trace-tree" type="application/json">')[1].split("</script>")[0])
    assert tree["trace"]["last_seq"] == trace.last_seq and tree["trace"]["duration_ms"] == 2000
    embedded = [run["id"] for page in tree["pages"] for run in page["runs"]]
    assert sorted(embedded) == sorted(str(pk) for pk in Run.objects.filter(trace=trace).values_list("pk", flat=True))
    assert "<dt>Duration</dt><dd>2.00 s</dd>" in body


def test_a_long_trace_embeds_one_screen_of_runs(client, django_assert_max_num_queries):
    trace = make_agent_trace(200)
    with django_assert_max_num_queries(60):
        body = client.get(reverse("traces:detail", args=[trace.pk])).content.decode()
    tree = json.loads(body.split('id="trace-tree" type="application/json">')[1].split("</script>")[0])
    assert 100 <= sum(len(page["runs"]) for page in tree["pages"]) < 300
    assert len(body) < 200_000


def test_the_detail_page_is_a_constant_number_of_queries(client, django_assert_max_num_queries):
    trace = make_trace(runs=50)
    with django_assert_max_num_queries(6):
        assert client.get(reverse("traces:detail", args=[trace.pk])).status_code == 200


def test_it_exports_a_trace_as_json(client):
    trace = make_trace("显示用户表的10条用户数据")
    response = client.get(reverse("traces:export", args=[trace.pk]))
    document = json.loads(response.content)
    assert response["Content-Disposition"].startswith("attachment")
    assert (
        document["request"] == "显示用户表的10条用户数据"
        and len(document["runs"]) == 3
        and len(document["events"]) == trace.last_seq
    )


def test_feedback_is_stored_and_filterable(client):
    trace = make_trace()
    client.post(reverse("traces:feedback", args=[trace.pk]), {"rating": "down", "comment": "wrong table"})
    trace.refresh_from_db()
    assert (trace.feedback, trace.feedback_comment) == (-1, "wrong table")
    assert "👎" in client.get(reverse("traces:list"), {"feedback": "down"}).content.decode()
    assert client.get(reverse("traces:feedback", args=[trace.pk])).status_code == 405


def test_compare_aligns_steps_and_diffs_sql(client):
    a = make_trace("q", model="builtin")
    b = make_trace("q", model="gpt-4o-mini", rerun_of=a)
    for trace, sql in ((a, "SELECT * FROM users\nLIMIT 10"), (b, "SELECT name FROM users\nLIMIT 10")):
        step = trace.runs.get(run_type=Run.Type.AGENT)
        Run.objects.create(
            trace=trace,
            parent=step,
            name="run_sql",
            run_type=Run.Type.TOOL,
            status="success",
            start_time=trace.started_at,
            outputs={"sql": sql},
        )
    body = client.get(reverse("traces:compare"), {"a": a.pk, "b": b.pk}).content.decode()
    assert "Step 1" in body and "gpt-4o-mini" in body
    assert (
        'class="diff-removed">- SELECT * FROM users' in body and 'class="diff-added">+ SELECT name FROM users' in body
    )
    missing = client.get(reverse("traces:compare"), {"a": a.pk})
    assert missing.status_code == 400 and "Choose trace B." in missing.content.decode()


def test_a_session_page_groups_its_traces(client):
    make_trace("first", session_id="tab-1")
    make_trace("second", session_id="tab-1")
    make_trace("elsewhere", session_id="tab-2")
    body = client.get(reverse("traces:session", args=["tab-1"])).content.decode()
    assert "first" in body and "second" in body and "elsewhere" not in body
    assert client.get(reverse("traces:session", args=["nobody"])).status_code == 404


def test_the_dashboard_summarises_a_time_range(client, django_assert_max_num_queries):
    make_trace("q1", status=Trace.Status.SUCCESS)
    make_trace("q1", status=Trace.Status.ERROR)
    old = make_trace("ancient", started_at=timezone.now() - dt.timedelta(days=60))
    with django_assert_max_num_queries(8):
        body = client.get(reverse("traces:dashboard"), {"range": "7d"}).content.decode()
    assert 'id="dashboard-data"' in body and "50%" in body and "ancient" not in body
    assert "ancient" in client.get(reverse("traces:dashboard"), {"range": "90d"}).content.decode()
    assert old


def test_run_again_is_a_post_a_link_only_fills_in_the_question():
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    trace = make_trace("how many users?")
    detail = client.get(reverse("traces:detail", args=[trace.pk])).content.decode()
    assert f'action="{reverse("traces:live")}"' in detail and 'name="csrfmiddlewaretoken"' in detail
    body = client.get(reverse("traces:live"), {"rerun": trace.pk}).content.decode()
    assert f'data-rerun-of="{trace.pk}"' in body and "how many users?" in body
    assert "data-autostart" not in body  # a link (from anywhere) or a reload starts nothing
    assert client.post(reverse("traces:live"), {"rerun": trace.pk}).status_code == 403  # no CSRF token
    token = client.cookies["csrftoken"].value
    body = client.post(reverse("traces:live"), {"rerun": trace.pk, "csrfmiddlewaretoken": token}).content.decode()
    assert 'data-autostart="1"' in body and f'data-rerun-of="{trace.pk}"' in body


def test_traces_of_other_users_are_hidden_when_auth_is_on(client, settings, django_user_model):
    settings.TRACE_REQUIRE_AUTH = True
    owner = django_user_model.objects.create_user("hal")
    other = django_user_model.objects.create_user("ivy")
    trace = make_trace("secret question", owner=owner)
    client.force_login(other)
    assert client.get(reverse("traces:detail", args=[trace.pk])).status_code == 404
    assert "secret question" not in client.get(reverse("traces:list")).content.decode()
    client.force_login(owner)
    assert client.get(reverse("traces:detail", args=[trace.pk])).status_code == 200


def test_the_detail_page_lists_only_the_runs_again_its_viewer_may_see(client, settings, django_user_model):
    settings.TRACE_REQUIRE_AUTH = True
    owner, other = django_user_model.objects.create_user("hal"), django_user_model.objects.create_user("ivy")
    original = make_trace("a shared question", owner=owner)
    mine = make_trace("a shared question", owner=owner, rerun_of=original)
    theirs = make_trace("a shared question", owner=other, rerun_of=original)
    client.force_login(owner)
    body = client.get(reverse("traces:detail", args=[original.pk])).content.decode()
    assert f"b={mine.pk}" in body and str(theirs.pk) not in body
    client.force_login(django_user_model.objects.create_user("sam", is_staff=True))
    body = client.get(reverse("traces:detail", args=[original.pk])).content.decode()
    assert f"b={mine.pk}" in body and f"b={theirs.pk}" in body


def test_with_auth_on_every_page_needs_a_login_and_ownerless_traces_are_staffs(client, settings, django_user_model):
    settings.TRACE_REQUIRE_AUTH = True
    cli_run = make_trace("an ownerless runagent question", session_id="cli", final_response="rows")
    pages = [
        reverse("traces:live"),
        reverse("traces:list"),
        reverse("traces:detail", args=[cli_run.pk]),
        reverse("traces:export", args=[cli_run.pk]),
        reverse("traces:session", args=["cli"]),
        reverse("traces:dashboard"),
        reverse("traces:compare") + f"?a={cli_run.pk}&b={cli_run.pk}",
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next="), url
    feedback = client.post(reverse("traces:feedback", args=[cli_run.pk]), {"value": "down"})
    assert feedback.status_code == 302  # not stored
    cli_run.refresh_from_db()
    assert cli_run.feedback is None
    assert client.get("/health").status_code != 302 and client.get(reverse("login")).status_code == 200

    client.force_login(django_user_model.objects.create_user("una"))
    assert client.get(reverse("traces:detail", args=[cli_run.pk])).status_code == 404
    assert client.get(reverse("traces:export", args=[cli_run.pk])).status_code == 404
    assert "ownerless runagent" not in client.get(reverse("traces:list")).content.decode()
    assert "ownerless runagent" not in client.get(reverse("traces:live")).content.decode()
    assert client.get(reverse("traces:session", args=["cli"])).status_code == 404
    client.force_login(django_user_model.objects.create_user("stan", is_staff=True))
    assert client.get(reverse("traces:detail", args=[cli_run.pk])).status_code == 200
    settings.TRACE_SHARE_UNOWNED = True
    client.force_login(django_user_model.objects.get(username="una"))
    assert client.get(reverse("traces:detail", args=[cli_run.pk])).status_code == 200


def test_any_user_logs_in_changes_the_password_and_logs_out_from_the_sites_own_pages(
    client, settings, django_user_model
):
    settings.TRACE_REQUIRE_AUTH = True
    django_user_model.objects.create_user("vera", password="old-pass-8812")  # not staff
    login = client.get(reverse("traces:list"), follow=True)
    assert login.request["PATH_INFO"] == reverse("login") and b'name="password"' in login.content
    refused = client.post(reverse("login"), {"username": "vera", "password": "wrong"})
    assert b"data-login-error" in refused.content
    response = client.post(
        reverse("login") + "?next=/traces/", {"username": "vera", "password": "old-pass-8812", "next": "/traces/"}
    )
    assert response.status_code == 302 and response["Location"] == "/traces/"
    page = client.get(reverse("traces:list")).content.decode()
    assert "vera" in page and "data-logout" in page and 'href="/admin/"' not in page  # not staff: no admin link
    changed = client.post(
        reverse("password_change"),
        {"old_password": "old-pass-8812", "new_password1": "new-pass-9923x", "new_password2": "new-pass-9923x"},
    )
    assert changed.status_code == 302 and changed["Location"] == reverse("password_change_done")
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("traces:list")).status_code == 302
    # The login throttle needs the request (client.login() has none): through the login page.
    relogin = client.post(reverse("login"), {"username": "vera", "password": "new-pass-9923x"})
    assert relogin.status_code == 302 and client.get(reverse("traces:list")).status_code == 200


def test_slower_than_is_counted_from_the_duration_index():
    """A few traces in a hundred are slower than a filter's bound: counted without an index,
    every trace was read (a million at a million traces)."""
    from django.db import connection

    from traces.pages.pagination import COUNT_LIMIT

    counted = Trace.objects.filter(duration_ms__gte=5000).order_by()[: COUNT_LIMIT + 1]
    sql, params = counted.values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
            assert "trace_duration_idx" in plan, plan
        else:
            cursor.execute(f"EXPLAIN {sql}", params)
            columns = [column[0] for column in cursor.description]
            row = dict(zip(columns, cursor.fetchone(), strict=True))
            assert "trace_duration_idx" in (row["possible_keys"] or ""), row
