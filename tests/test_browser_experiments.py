"""The experiment and compare pages, the dashboard's accuracy chart and "Add to dataset" in a real
headless Chromium against a real daphne: nothing the console reports, nothing the CSP blocks."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from evals.models import DatasetItem
from tests.factories import make_dataset, make_experiment, make_trace
from tests.pages import XSS, shot
from tests.servers import daphne

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("configured_agent_db"),
    pytest.mark.browser,
]


@pytest.fixture
async def watched(page):
    """The page, recording console errors, uncaught exceptions and CSP violations."""
    page.problems = []
    page.on("console", lambda message: message.type == "error" and page.problems.append(message.text))
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    await page.add_init_script(
        "window.__blocked = [];"
        "document.addEventListener('securitypolicyviolation',"
        " (e) => window.__blocked.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    return page


async def clean(page) -> None:
    await page.wait_for_load_state("networkidle")
    assert await page.evaluate("window.__blocked") == []
    assert page.problems == []
    assert await page.evaluate("window.__xss") is None and page.dialogs == []


@database_sync_to_async
def two_experiments():
    shop = make_dataset("shop", questions=3)
    DatasetItem.objects.create(dataset=shop, question=XSS, expected_sql="SELECT 1")
    now = timezone.now()
    a = make_experiment(shop, [True, True, False, True], name="before", started_at=now - dt.timedelta(days=1))
    b = make_experiment(shop, [True, False, True, False], name="after", started_at=now)
    b.results.filter(item__question=XSS).update(sql=f"SELECT count(*) FROM users -- {XSS}")
    make_experiment(make_dataset("other", questions=2), [True, False])
    return a, b


async def test_the_experiment_and_compare_pages_render_with_highlighted_sql(watched):
    page = watched
    a, b = await two_experiments()
    with daphne() as host:
        await page.goto(f"http://{host}/experiments/{b.pk}/")
        await page.locator("pre.sql.hljs .hljs-keyword").first.wait_for()
        assert await page.locator("table.experiment-items tbody tr").count() == 4
        sql = page.locator(f"tr:has-text('{XSS[:20]}') pre.sql")
        assert "-- <img src=x" in await sql.inner_text()
        assert await page.locator("table.experiment-items img, table.experiment-items script").count() == 0
        await shot(page, "experiment")
        await clean(page)

        await page.click("a[href='?failed=1']")
        await page.wait_for_url(re.compile(r"failed=1"))
        assert await page.locator("[data-verdict=failed]").count() == 2
        assert await page.locator("[data-verdict=passed]").count() == 0

        await page.select_option("[data-compare-with] select", str(a.pk))
        await page.click("[data-compare-with] button[type=submit]")
        await page.wait_for_url(re.compile(rf"/experiments/compare/\?a={b.pk}&b={a.pk}"))
        await page.goto(f"http://{host}/experiments/compare/?a={a.pk}&b={b.pk}")
        await page.locator("table.experiment-pairs pre.sql.hljs").first.wait_for()
        changes = await page.locator("[data-change]").evaluate_all("rows => rows.map((row) => row.dataset.change)")
        assert changes == ["regressed", "regressed", "fixed", "same"]
        assert await page.locator("[data-delta=execution_accuracy]").get_attribute("data-verdict") == "worse"
        await shot(page, "experiment-compare")
        await clean(page)


async def test_the_dashboard_draws_each_datasets_accuracy_over_its_experiments(watched):
    page = watched
    await two_experiments()
    with daphne() as host:
        await page.goto(f"http://{host}/dashboard/")
        chart = page.locator("[data-chart=accuracy]")
        await chart.locator("canvas").wait_for()
        labels = await chart.locator(".u-legend .u-label").all_inner_texts()
        assert {"shop", "other"} <= set(labels)
        assert await page.evaluate("window.tracesite.charts.accuracy.data.length") == 3  # x, shop, other
        await chart.scroll_into_view_if_needed()
        await shot(page, "dashboard-accuracy")
        await clean(page)


async def test_traces_ticked_in_the_history_are_added_to_a_dataset(watched):
    page = watched

    @database_sync_to_async
    def setup():
        return make_dataset("picked"), [make_trace(f"question {i}") for i in range(3)]

    target, traces = await setup()
    with daphne() as host:
        await page.goto(f"http://{host}/traces/")
        button = page.locator("[data-add-to-dataset] [data-add-button]")
        assert await button.is_disabled()
        for trace in traces[:2]:
            await page.check(f"input[data-pick][value='{trace.pk}']")
        assert await button.is_enabled()
        await page.select_option("[data-add-to-dataset] select", str(target.pk))
        await button.click()
        await page.wait_for_url(re.compile(r"/datasets/add-traces/"))
        assert await page.locator("[data-added]").get_attribute("data-added") == "2"
        await clean(page)
        added = await database_sync_to_async(lambda: set(target.items.values_list("source_trace_id", flat=True)))()
        assert added == {traces[0].pk, traces[1].pk}

        await page.goto(f"http://{host}/traces/{traces[2].pk}/")
        await page.click("[data-add-to-dataset] [data-add-button]")
        await page.wait_for_url(re.compile(r"/datasets/add-traces/"))
        assert await page.locator("[data-added]").get_attribute("data-added") == "1"
        await clean(page)
