"""The admin over the history: read-only, filterable, searchable, O(1) queries per page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.factories import make_trace
from traces.models import Event, Run, Trace

pytestmark = pytest.mark.django_db

LIST_PAGES = [
    "",
    "?status__exact=error",
    "?agent_name=sql_agent",
    "?started_at__gte=2000-01-01T00:00:00%2B00:00",
    "?q=用户",
    "?q=orders",
]


@pytest.mark.parametrize("query", LIST_PAGES)
def test_it_lists_traces_in_a_constant_number_of_queries(staff_client, django_assert_max_num_queries, query):
    url = reverse("admin:traces_trace_changelist") + query
    make_trace("how many orders per country?")
    with django_assert_max_num_queries(12) as few:
        assert staff_client.get(url).status_code == 200
    for i in range(40):
        make_trace(f"显示用户表的{i}条用户数据", status=Trace.Status.ERROR if i % 2 else Trace.Status.SUCCESS)
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = staff_client.get(url)
    assert response.status_code == 200


def test_it_finds_traces_by_question_and_answer(staff_client):
    make_trace("how many orders per country?", final_response="Germany leads")
    make_trace("显示用户表的10条用户数据", final_response="共 10 行")
    url = reverse("admin:traces_trace_changelist")
    assert "how many orders" in staff_client.get(url, {"q": "Germany"}).content.decode()
    body = staff_client.get(url, {"q": "用户表"}).content.decode()
    assert "显示用户表" in body and "how many orders" not in body


def test_it_shows_a_trace_with_its_runs_read_only(staff_client):
    trace = make_trace("<script>alert(1)</script>")
    response = staff_client.get(reverse("admin:traces_trace_change", args=[trace.pk]))
    body = response.content.decode()
    assert response.status_code == 200
    assert "step_1" in body and "run_0" in body
    assert "<script>alert(1)</script>" not in body  # escaped
    assert 'name="_save"' not in body


def test_it_shows_an_event_envelope(staff_client):
    trace = make_trace()
    event = Event.objects.get(trace=trace, seq=1)
    body = staff_client.get(reverse("admin:traces_event_change", args=[event.pk])).content.decode()
    assert "trace_started" in body and "<details" in body


def test_it_refuses_to_add_or_change_recorded_data(staff_client):
    trace = make_trace()
    for model in ("trace", "run", "event"):
        assert staff_client.get(reverse(f"admin:traces_{model}_add")).status_code == 403
    response = staff_client.post(reverse("admin:traces_trace_change", args=[trace.pk]), {"request": "tampered"})
    assert response.status_code == 403
    assert Trace.objects.get(pk=trace.pk).request != "tampered"


def test_it_lets_an_admin_delete_a_trace(staff_client):
    trace = make_trace()
    response = staff_client.post(reverse("admin:traces_trace_delete", args=[trace.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Trace.objects.filter(pk=trace.pk).exists()
    assert not Run.objects.filter(trace_id=trace.pk).exists()


BIG_LISTS = ["admin:traces_trace_changelist", "admin:traces_run_changelist", "admin:traces_event_changelist"]


@pytest.mark.parametrize("name", BIG_LISTS)
def test_it_counts_a_big_list_no_further_than_the_limit(staff_client, django_assert_max_num_queries, name, monkeypatch):
    from traces.pages import pagination

    monkeypatch.setattr(pagination, "COUNT_LIMIT", 3)
    for i in range(4):
        make_trace(f"q{i}")  # 4 traces, 12 runs, 40-odd events: all more than 3
    with django_assert_max_num_queries(8) as queries:
        body = staff_client.get(reverse(name)).content.decode()
    counts = [query["sql"] for query in queries.captured_queries if "COUNT(" in query["sql"].upper()]
    # One count, of a subquery that stops at the limit: never an exact count of the whole table.
    assert len(counts) == 1 and "LIMIT 4" in counts[0]
    assert "3+ " in body


def test_it_orders_big_lists_the_way_their_indexes_read(staff_client, django_assert_max_num_queries):
    make_trace("q")
    expected = {
        "admin:traces_trace_changelist": ('"started_at" DESC', '"id" DESC'),
        "admin:traces_run_changelist": ('"trace_id" ASC', '"start_time" ASC', '"id" ASC'),
        "admin:traces_event_changelist": ('"id" DESC',),
    }
    for name, columns in expected.items():
        with django_assert_max_num_queries(8) as queries:
            staff_client.get(reverse(name))
        listed = [query["sql"] for query in queries.captured_queries if "ORDER BY" in query["sql"]]
        order = listed[0].split("ORDER BY")[1].replace("`", '"')
        assert [part.strip().split(".")[-1] for part in order.split("LIMIT")[0].split(",")] == list(columns), name
