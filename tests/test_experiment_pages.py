"""The experiment page, two experiments compared, the dashboard's accuracy data, and traces added
to a dataset from the history and the trace page."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from evals.experiments import regressions
from evals.models import Dataset, DatasetItem
from tests.factories import make_dataset, make_experiment, make_trace
from traces.models import Run, Trace

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert(1)</script>"


def test_it_shows_an_experiment_with_its_figures_and_each_items_verdict(client):
    shop = make_dataset(questions=3)
    run = make_experiment(shop, [True, False, True], model="gpt-4o-mini")
    body = client.get(reverse("evals:experiment", args=[run.pk])).content.decode()
    assert f'href="/datasets/{shop.pk}/"' in body and "gpt-4o-mini" in body
    assert re.search(r'data-figure="passed">2</span> of 3 judged', body)
    assert 'data-figure="execution_accuracy">67%' in body
    assert body.count('data-verdict="passed"') == 2 and body.count('data-verdict="failed"') == 1
    assert "the rows differ" in body and "<code data-execution>different</code>" in body
    assert body.count('<pre class="sql" data-sql>') == 3
    for row in run.results.all():
        assert f'href="/traces/{row.trace_id}/"' in body


def test_the_failures_filter_lists_only_the_items_that_failed(client):
    shop = make_dataset(questions=3)
    run = make_experiment(shop, [True, False, None])
    body = client.get(reverse("evals:experiment", args=[run.pk]), {"failed": "1"}).content.decode()
    assert body.count("data-item=") == 1 and 'data-verdict="failed"' in body
    assert "question 1" in body and "question 0" not in body and "question 2" not in body
    assert 'data-figure="items">3<' in body  # the figures stay the experiment's


def test_questions_and_sql_are_text_on_the_experiment_and_compare_pages(client):
    shop = make_dataset()
    DatasetItem.objects.create(dataset=shop, question=f"{SCRIPT} users?", expected_sql="SELECT 1")
    run = make_experiment(shop, [False])
    run.results.update(sql=f"SELECT '{SCRIPT}'", reason=SCRIPT)
    for url in (
        reverse("evals:experiment", args=[run.pk]),
        reverse("evals:compare") + f"?a={run.pk}&b={run.pk}",
    ):
        body = client.get(url).content.decode()
        assert SCRIPT not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt; users?" in body
        assert "SELECT &#x27;&lt;script&gt;alert(1)&lt;/script&gt;&#x27;" in body


def test_an_experiment_is_seen_by_whoever_may_see_its_dataset(client, settings, django_user_model):
    settings.TRACE_REQUIRE_AUTH = True
    owner, other = django_user_model.objects.create_user("hal"), django_user_model.objects.create_user("ivy")
    theirs = make_experiment(make_dataset(owner=owner, questions=1), [True])
    nobodys = make_experiment(make_dataset("shared", questions=1), [True])
    client.force_login(other)
    for run in (theirs, nobodys):
        assert client.get(reverse("evals:experiment", args=[run.pk])).status_code == 404
    compared = client.get(reverse("evals:compare"), {"a": theirs.pk, "b": nobodys.pk})
    assert compared.status_code == 404 and "No experiment has the id" in compared.content.decode()
    settings.TRACE_SHARE_UNOWNED = True
    assert client.get(reverse("evals:experiment", args=[nobodys.pk])).status_code == 200
    client.force_login(owner)
    assert client.get(reverse("evals:experiment", args=[theirs.pk])).status_code == 200
    client.force_login(django_user_model.objects.create_user("stan", is_staff=True))
    assert client.get(reverse("evals:experiment", args=[theirs.pk])).status_code == 200


def test_the_compare_page_lists_regressions_and_fixes_first_with_the_deltas(client):
    shop = make_dataset(questions=4)
    a = make_experiment(shop, [True, True, False, True], name="before")
    b = make_experiment(shop, [True, False, True, True], name="after")
    for experiment in (a, b):  # the same latency whatever the items' ids (the factory's depends on them)
        experiment.results.update(duration_ms=1000)
    b.results.filter(passed=False).update(duration_ms=9000, cost=Decimal("0.005"))
    body = client.get(reverse("evals:compare"), {"a": a.pk, "b": b.pk}).content.decode()
    changes = re.findall(r'data-change="(\w+)"', body)
    assert changes == ["regressed", "fixed", "same", "same"]
    regressed = re.search(r'data-item="(\d+)" data-change="regressed"', body).group(1)
    assert [row.item_id for row in regressions(b, a)] == [int(regressed)]
    assert "1 regressed · 1 fixed" in body
    assert "data-different-datasets" not in body
    accuracy = delta(body, "execution_accuracy")
    assert accuracy["verdict"] == "same" and "75%" in accuracy["cells"][0] and "75%" in accuracy["cells"][1]
    cost = delta(body, "total_cost")
    assert cost["verdict"] == "worse" and cost["cells"] == ["$0.0040", "$0.0080", "+$0.0040"]
    p95 = delta(body, "p95_ms")
    assert p95["verdict"] == "worse" and p95["cells"][2].startswith("+")


def delta(body: str, key: str) -> dict:
    """A row of the compare page's figures: its verdict, and the text of A, B and B − A."""
    row = re.search(rf'<tr data-delta="{key}" data-verdict="(\w*)">(.*?)</tr>', body, re.S)
    cells = [
        re.sub(r"<[^>]+>|\s+", " ", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row.group(2), re.S)
    ]
    return {"verdict": row.group(1), "cells": [re.sub(r"\s+", "", cell) for cell in cells]}


def test_it_compares_experiments_of_different_datasets_and_says_so(client):
    first, second = (
        make_experiment(make_dataset("one", questions=1), [True]),
        make_experiment(make_dataset("two", questions=1), [True]),
    )
    second.dataset.items.update(question="question elsewhere")
    response = client.get(reverse("evals:compare"), {"a": first.pk, "b": second.pk})
    body = response.content.decode()
    assert response.status_code == 200 and "data-different-datasets" in body
    assert re.findall(r'data-change="(\w+)"', body) == ["only_one", "only_one"]


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ({"a": "1"}, 400, "Choose experiment B."),
        ({"a": "x", "b": "2"}, 400, "is not an experiment id"),
        ({"b": ""}, 400, "Choose experiment A."),
        ({"a": "999", "b": "998"}, 404, "No experiment has the id 999."),
    ],
)
def test_the_compare_page_says_what_is_wrong_with_the_pair(client, query, status, message):
    response = client.get(reverse("evals:compare"), query)
    assert response.status_code == status and message in response.content.decode()
    assert "data-deltas" not in response.content.decode()


def test_the_experiment_page_offers_the_datasets_other_experiments_to_compare_with(client):
    shop = make_dataset(questions=1)
    first, second = make_experiment(shop, [True], name="first"), make_experiment(shop, [False], name="second")
    make_experiment(make_dataset("elsewhere", questions=1), [True], name="elsewhere")
    body = client.get(reverse("evals:experiment", args=[first.pk])).content.decode()
    form = body.split("data-compare-with>")[1].split("</form>")[0]
    assert f'name="a" value="{first.pk}"' in form and f'<option value="{second.pk}">' in form
    assert "elsewhere" not in form
    alone = make_experiment(make_dataset("alone", questions=1), [True])
    assert "data-compare-with" not in client.get(reverse("evals:experiment", args=[alone.pk])).content.decode()


def test_the_experiment_and_compare_pages_are_a_constant_number_of_queries(client, django_assert_max_num_queries):
    shop = make_dataset(questions=30)
    a, b = make_experiment(shop, [True] * 30), make_experiment(shop, [False] * 30)
    for _ in range(5):
        make_experiment(shop, [])
    # Each summary reads the judge's ratings too: one query more for each experiment shown.
    with django_assert_max_num_queries(5):
        assert client.get(reverse("evals:experiment", args=[a.pk])).status_code == 200
    with django_assert_max_num_queries(9):
        assert client.get(reverse("evals:compare"), {"a": a.pk, "b": b.pk}).status_code == 200
    with django_assert_max_num_queries(1):
        assert client.get(reverse("evals:accuracy")).status_code == 200


def test_the_dashboards_accuracy_data_has_a_series_per_visible_dataset(client, settings, django_user_model):
    now = timezone.now()
    shop, other = make_dataset("shop", questions=4), make_dataset("other", questions=2)
    make_experiment(shop, [True, False, False, False], started_at=now - dt.timedelta(days=2))
    make_experiment(other, [True, True], started_at=now - dt.timedelta(days=1))
    make_experiment(shop, [True, True, True, False], started_at=now)
    data = client.get(reverse("evals:accuracy")).json()
    assert data["x"] == sorted(data["x"]) and len(data["x"]) == 3
    assert {s["label"]: s["values"] for s in data["series"]} == {
        "other": [None, 1.0, None],
        "shop": [0.25, None, 0.75],
    }
    dashboard = client.get(reverse("traces:dashboard")).content.decode()
    assert f'data-chart="accuracy" data-source="{reverse("evals:accuracy")}"' in dashboard

    settings.TRACE_REQUIRE_AUTH = True
    owner = django_user_model.objects.create_user("hal")
    make_experiment(make_dataset("hals", owner=owner, questions=1), [True])
    client.force_login(owner)
    assert [s["label"] for s in client.get(reverse("evals:accuracy")).json()["series"]] == ["hals"]


def good_trace_with_sql(request: str, sql: str, **fields) -> Trace:
    trace = make_trace(request, feedback=1, **fields)
    Run.objects.create(
        trace=trace,
        name="run_sql",
        run_type=Run.Type.TOOL,
        status=Run.Status.SUCCESS,
        start_time=trace.started_at + dt.timedelta(seconds=1),
        inputs={"sql": sql},
    )
    return trace


def add(client, target: Dataset, *traces: Trace, **extra):
    return client.post(
        reverse("evals:add_traces"), {"dataset": target.pk, "trace": [str(t.pk) for t in traces], **extra}
    )


def test_ticked_traces_become_items_and_a_good_ones_sql_is_its_expected_sql(client):
    target = make_dataset("mine")
    good = good_trace_with_sql("how many users?", "SELECT COUNT(*) FROM users")
    bad = make_trace("latest orders", feedback=-1)
    Run.objects.create(
        trace=bad,
        name="run_sql",
        run_type=Run.Type.TOOL,
        status=Run.Status.SUCCESS,
        start_time=bad.started_at,
        inputs={"sql": "SELECT * FROM orders"},
    )
    unrated = make_trace("top products")
    response = add(client, target, good, bad, unrated, next="/traces/?q=x")
    body = response.content.decode()
    assert response.status_code == 200 and 'data-added="3"' in body and 'href="/traces/?q=x"' in body
    items = {item.question: item for item in target.items.all()}
    assert items["how many users?"].expected_sql == "SELECT COUNT(*) FROM users"
    assert items["latest orders"].expected_sql == "" and items["top products"].expected_sql == ""
    assert {item.source_trace_id for item in items.values()} == {good.pk, bad.pk, unrated.pk}

    again = add(client, target, good).content.decode()  # a reload, or the same trace ticked again
    assert 'data-added="0"' in again and "1 was in it already" in again
    assert target.items.count() == 3


def test_only_traces_the_user_may_see_are_added_to_a_dataset_they_may_edit(client, settings, django_user_model):
    settings.TRACE_REQUIRE_AUTH = True
    owner, other = django_user_model.objects.create_user("hal"), django_user_model.objects.create_user("ivy")
    mine = make_dataset("hals", owner=owner)
    visible = make_trace("my question", owner=owner)
    hidden = make_trace("their question", owner=other)
    client.force_login(owner)
    body = add(client, mine, visible, hidden).content.decode()
    assert 'data-added="1"' in body and "1 was not found" in body
    assert list(mine.items.values_list("question", flat=True)) == ["my question"]
    theirs = make_dataset("ivys", owner=other)
    assert add(client, theirs, visible).status_code == 404
    assert add(client, make_dataset("nobodys"), visible).status_code == 404  # staff's to edit
    assert theirs.items.count() == 0
    nothing = client.post(reverse("evals:add_traces"), {"dataset": mine.pk})
    assert nothing.status_code == 400 and "Tick the traces to add." in nothing.content.decode()
    assert client.get(reverse("evals:add_traces")).status_code == 405


def test_the_history_and_the_trace_page_offer_the_datasets_the_user_may_edit(client, settings, django_user_model):
    trace = make_trace("a question")
    pages = [reverse("traces:list"), reverse("traces:detail", args=[trace.pk])]
    for url in pages:
        assert "data-add-to-dataset" not in client.get(url).content.decode()  # no dataset yet
    settings.TRACE_REQUIRE_AUTH = True
    owner = django_user_model.objects.create_user("hal")
    trace = make_trace("hal's question", owner=owner)
    mine, _ = (
        make_dataset("hals", owner=owner),
        make_dataset("ivys", owner=django_user_model.objects.create_user("ivy")),
    )
    client.force_login(owner)
    for url in [reverse("traces:list"), reverse("traces:detail", args=[trace.pk])]:
        body = client.get(url).content.decode()
        form = body.split("data-add-to-dataset>")[1].split("</form>")[0]
        assert f'action="{reverse("evals:add_traces")}"' in body and "csrfmiddlewaretoken" in form
        assert f'<option value="{mine.pk}">hals</option>' in form and "ivys" not in form
    detail = client.get(reverse("traces:detail", args=[trace.pk])).content.decode()
    assert f'name="trace" value="{trace.pk}"' in detail.split("data-add-to-dataset>")[1].split("</form>")[0]


def test_the_accuracy_chart_data_is_json_the_dashboard_script_reads(client):
    shop = make_dataset("商店 <b>", questions=1)
    make_experiment(shop, [True])
    response = client.get(reverse("evals:accuracy"))
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content)["series"][0]["label"] == "商店 <b>"
