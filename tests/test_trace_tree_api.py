"""The trace page's run tree a page at a time (traces.pages.tree): children in (start_time, id)
order with a cursor, one run in full, search with ancestors, the events by seq, and the pages'
access rule."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from tests.factories import make_agent_trace
from traces.models import Run
from traces.pages.tree import first_screen

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def long_run(django_db_setup, django_db_blocker):
    """1 root + 250 steps × (model call, tool call), stored once for the module."""
    with django_db_blocker.unblock():
        trace = make_agent_trace(250)
        yield trace
        trace.delete()


def api(client, trace, name: str, *args, **params) -> dict:
    response = client.get(reverse(f"traces:{name}", args=[trace.pk, *args]), params)
    assert response.status_code == 200, response.content[:300]
    return json.loads(response.content)


def root_of(trace) -> Run:
    return Run.objects.get(trace=trace, parent__isnull=True)


def test_it_lists_the_top_level_runs_with_how_many_children_each_has(client, long_run):
    (page,) = api(client, long_run, "tree_runs")["pages"]
    assert page["parent"] is None and page["next"] is None
    (root,) = page["runs"]
    assert root["name"] == "agent" and root["run_type"] == "agent" and root["children"] == 250
    assert set(root) >= {"id", "parent_id", "status", "start_time", "end_time", "duration_ms", "tokens", "cost"}


def test_it_pages_a_runs_children_in_time_order_with_a_cursor(client, long_run, django_assert_max_num_queries):
    root = root_of(long_run)
    seen = []
    after = ""
    while True:
        with django_assert_max_num_queries(4):
            (page,) = api(client, long_run, "tree_runs", parent=str(root.pk), limit=100, after=after)["pages"]
        seen += page["runs"]
        if not page["next"]:
            break
        after = page["next"]
    assert [run["name"] for run in seen] == [f"step_{n}" for n in range(1, 251)]
    assert all(run["children"] == 2 and run["parent_id"] == str(root.pk) for run in seen)
    assert len({run["id"] for run in seen}) == 250


def test_it_lists_the_children_of_several_runs_at_once(client, long_run):
    steps = list(Run.objects.filter(trace=long_run, name__in=["step_1", "step_2"]).order_by("start_time"))
    pages = api(client, long_run, "tree_runs", parent=[str(step.pk) for step in steps])["pages"]
    assert [page["parent"] for page in pages] == [str(step.pk) for step in steps]
    for page in pages:
        assert [run["run_type"] for run in page["runs"]] == ["think", "tool"]
        assert page["runs"][0]["model"] is None and page["runs"][0]["tokens"] == 12
        assert page["runs"][1]["children"] == 0


def test_the_first_screen_is_read_a_level_at_a_time_from_the_rows(long_run, django_assert_max_num_queries):
    with django_assert_max_num_queries(3):  # the top level, the root's steps, their calls
        pages = first_screen(long_run, rows=30)
    root, steps, *families = pages
    assert steps["parent"] == root["runs"][0]["id"] and steps["offset"] == 0
    assert len(steps["runs"]) == 30 and steps["next"] is not None  # the root's other steps come later
    # The calls of the steps on the first screen (the root, then a step and its two calls, ...).
    assert 9 <= len(families) <= 10
    assert [family["parent"] for family in families] == [step["id"] for step in steps["runs"][: len(families)]]
    assert all([run["run_type"] for run in family["runs"]] == ["think", "tool"] for family in families)


def test_a_model_call_comes_with_its_conversation_bounded(client, long_run, settings):
    settings.TRACE_REQUIRE_AUTH = False
    third = Run.objects.get(trace=long_run, run_type="think", parent__name="step_3")
    run = api(client, long_run, "tree_run", third.pk)
    talk = run["conversation"]
    assert [m["content"] for m in talk["messages"] if m["role"] == "user"] == [
        f"go on with step {n}" for n in (1, 2, 3)
    ]
    assert talk["messages"][0]["role"] == "system" and talk["omitted"] == 0
    assert talk["tools"][0]["function"]["name"] == "run_sql"
    assert run["usage"]["total_tokens"] == 12 and run["inputs"]["messages_from"] == 4

    last = Run.objects.get(trace=long_run, run_type="think", parent__name="step_250")
    talk = api(client, long_run, "tree_run", last.pk)["conversation"]
    assert len(talk["messages"]) == 300 and talk["omitted"] == 2 * 250 - 300  # two messages a call
    assert talk["messages"][-1]["content"] == "go on with step 250"
    assert talk["tools"][0]["function"]["name"] == "run_sql"


def test_search_finds_runs_with_their_ancestors(client, long_run):
    found = api(client, long_run, "tree_search", q="step_24")
    names = [run["name"] for run in found["runs"]]
    assert names == ["step_24", *[f"step_{n}" for n in range(240, 250)]]
    root = root_of(long_run)
    assert found["runs"][0]["ancestors"] == [str(root.pk)]

    step = Run.objects.get(trace=long_run, name="step_240")
    (tool,) = api(client, long_run, "tree_search", q="run_sql", status="success", limit=1, after="")["runs"]
    assert tool["ancestors"] == [str(root.pk), str(Run.objects.get(pk=tool["parent_id"]).pk)]
    thinks = api(client, long_run, "tree_search", type="think", limit=2)
    assert len(thinks["runs"]) == 2 and thinks["next"]
    more = api(client, long_run, "tree_search", type="think", limit=2, after=thinks["next"])
    assert more["runs"][0]["start_time"] >= thinks["runs"][1]["start_time"]
    assert {run["id"] for run in more["runs"]}.isdisjoint(run["id"] for run in thinks["runs"])

    errors = api(client, long_run, "tree_search", error=1)["runs"]
    assert [run["ancestors"][-1] for run in errors] == [
        str(Run.objects.get(trace=long_run, name=f"step_{n}").pk) for n in (100, 200)
    ]
    (following,) = api(client, long_run, "tree_search", error=1, limit=1, **{"from": errors[0]["id"]})["runs"]
    assert following["id"] == errors[1]["id"]
    assert not api(client, long_run, "tree_search", error=1, **{"from": errors[1]["id"]})["runs"]
    assert step.name == "step_240"


def test_the_first_search_hit_carries_its_path_with_positions(client, long_run):
    """What the page needs to place a hit: the pages that hold it, without asking for the run first."""
    (hit,) = api(client, long_run, "tree_search", q="step_200", limit=1)["runs"]
    root = root_of(long_run)
    step = Run.objects.get(trace=long_run, name="step_200")
    assert hit["path"] == [
        {"id": str(root.pk), "parent_id": None, "position": 0},
        {"id": str(step.pk), "parent_id": str(root.pk), "position": 199},
    ]
    assert hit["path"] == api(client, long_run, "tree_run", step.pk)["path"]

    first, second = api(client, long_run, "tree_search", q="run_sql", status="error", limit=2)["runs"]
    tool = Run.objects.get(pk=first["id"])
    assert first["path"][-1] == {"id": first["id"], "parent_id": str(tool.parent_id), "position": 1}
    assert first["path"] == api(client, long_run, "tree_run", tool.pk)["path"]
    assert "path" not in second
    assert api(client, long_run, "tree_search", q="no such run")["runs"] == []


def test_the_events_come_a_page_at_a_time_by_seq(client, long_run):
    first = api(client, long_run, "tree_events", limit=300)
    assert [event["seq"] for event in first["events"]] == list(range(1, 301)) and first["next"] == 300
    rest = api(client, long_run, "tree_events", after=first["next"], limit=1000)
    assert rest["events"][-1]["event_type"] == "trace_completed" and rest["next"] is None
    assert rest["events"][0]["seq"] == 301


def test_another_users_trace_is_not_found_and_anonymous_users_are_sent_to_log_in(client, settings, django_user_model):
    settings.TRACE_REQUIRE_AUTH = True
    owner = django_user_model.objects.create_user("olga")
    other = django_user_model.objects.create_user("omar")
    trace = make_agent_trace(3, owner=owner)
    run = Run.objects.filter(trace=trace).first()
    urls = [
        reverse("traces:tree_runs", args=[trace.pk]),
        reverse("traces:tree_run", args=[trace.pk, run.pk]),
        reverse("traces:tree_search", args=[trace.pk]) + "?q=step",
        reverse("traces:tree_events", args=[trace.pk]),
    ]
    for url in urls:
        assert client.get(url).status_code == 302  # to the login page, nothing of the trace
    client.force_login(other)
    for url in urls:
        assert client.get(url).status_code == 404
    client.force_login(owner)
    for url in urls:
        assert client.get(url).status_code == 200


def test_a_run_of_another_trace_is_not_listed_under_this_one(client, long_run):
    other = make_agent_trace(2)
    step = Run.objects.filter(trace=other, name="step_1").get()
    assert api(client, long_run, "tree_runs", parent=str(step.pk))["pages"] == []
    response = client.get(reverse("traces:tree_run", args=[long_run.pk, step.pk]))
    assert response.status_code == 404


def test_the_top_level_runs_are_read_through_the_traces_index_not_the_parents(long_run):
    """Every trace's root is under NULL in run_parent_start_idx: read from there, the top level
    walks the roots of the whole history, and SQLite, which keeps no statistics unless told to,
    chose it. MariaDB chooses by its statistics (run_trace_start_idx at a million traces; in a test
    database of a few traces the roots are rightly few); the pages' answers are the tests above."""
    from django.db import connection

    from traces.pages.tree import compact, top_level

    if connection.vendor != "sqlite":
        pytest.skip("the plan is chosen by the index statistics MariaDB keeps")
    sql, params = compact(top_level(long_run.pk))[:121].query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        plan = " ".join(str(row[-1]) for row in cursor.fetchall())
    outer = plan.split("CORRELATED")[0]  # the children's count is rightly read from the parents' index
    assert "run_trace_start_idx" in outer and "run_parent_start_idx" not in outer, plan
