"""The history, compare and dashboard pages in a real headless Chromium against a real daphne."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from tests.factories import make_trace
from tests.pages import XSS, shot
from tests.servers import daphne
from traces.models import Trace

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("configured_agent_db"),
    pytest.mark.browser,
]

ANSWER = "**Total**: 3 orders\n\n| country | orders |\n|---|---|\n| Canada | 3 |\n| Chile | 2 |"


@database_sync_to_async
def traces(*specs: dict) -> list[Trace]:
    return [make_trace(**spec) for spec in specs]


async def test_two_traces_ticked_in_the_history_open_side_by_side(page):
    first, second, third = await traces(
        {"request": "how many orders per country?", "model": "builtin"},
        {"request": "orders per country, again", "model": "gpt-4o-mini"},
        {"request": "a third question"},
    )
    with daphne() as host:
        await page.goto(f"http://{host}/traces/")
        button = page.locator("[data-compare-button]")
        assert await button.is_disabled()
        await page.check(f"input[data-pick][value='{first.pk}']")
        assert await button.is_disabled()
        await page.check(f"input[data-pick][value='{second.pk}']")
        assert await button.is_enabled()
        await page.check(f"input[data-pick][value='{third.pk}']")
        assert await button.is_disabled()  # three: not a pair
        assert "3 traces ticked" in await page.locator("[data-compare-hint]").inner_text()
        await page.uncheck(f"input[data-pick][value='{third.pk}']")
        await shot(page, "history-compare")
        await button.click()
        await page.wait_for_url(re.compile(r"/traces/compare/\?a=.*&b="))
        assert f"a={second.pk}" in page.url and f"b={first.pk}" in page.url  # in the list's order
        header = await page.locator("table.compare thead").inner_text()
        assert "builtin" in header and "gpt-4o-mini" in header


async def test_the_compare_page_renders_answers_as_markdown_and_untrusted_text_as_text(page):
    a, b = await traces(
        {"request": "orders per country", "final_response": ANSWER}, {"request": XSS, "final_response": XSS}
    )
    with daphne() as host:
        await page.goto(f"http://{host}/traces/compare/?a={a.pk}&b={b.pk}")
        answer = page.locator("[data-compare-answer=a]")
        await answer.locator("table").wait_for()
        assert await answer.locator("strong").inner_text() == "Total"
        assert await answer.locator("table tbody tr").count() == 2
        assert "Canada" in await answer.locator("table").inner_text()
        assert await answer.locator("pre").count() == 0  # no longer the raw text
        untrusted = page.locator("[data-compare-answer=b]")
        assert "<img src=x" in await untrusted.inner_text()
        assert await untrusted.locator("img, script").count() == 0
        assert await page.evaluate("window.__xss") is None and page.dialogs == []
        await shot(page, "compare")


async def test_the_compare_form_says_what_is_wrong_and_compares_by_id_prefix(page):
    a, b = await traces({"request": "first question"}, {"request": "second question"})
    with daphne() as host:
        response = await page.goto(f"http://{host}/traces/compare/?a=nonsense")
        assert response.status == 400
        assert "is not a trace id" in await page.locator("[data-field-error=a]").inner_text()
        assert "Choose trace B." in await page.locator("[data-field-error=b]").inner_text()
        await page.fill("input[name=a]", str(a.pk)[:8])
        await page.fill("input[name=b]", str(b.pk))
        await page.click("[data-compare-form] button[type=submit]")
        await page.wait_for_selector("table.compare")
        assert "first question" in await page.locator("table.compare").inner_text()
        response = await page.goto(f"http://{host}/traces/compare/?a={a.pk}&b=00000000-0000-4000-8000-000000000000")
        assert response.status == 404
        assert "No trace has the id" in await page.locator("[data-field-error=b]").inner_text()


async def test_the_dashboard_charts_have_a_date_axis_and_show_values_on_hover(page):
    now = timezone.now()
    await traces(
        {"request": "today", "started_at": now, "model": "builtin"},
        {"request": "today again", "started_at": now, "model": "gpt-4o-mini"},
        {"request": "three days ago", "started_at": now - dt.timedelta(days=3), "status": Trace.Status.ERROR},
    )
    with daphne() as host:
        await page.goto(f"http://{host}/dashboard/?range=7d")
        chart = page.locator("[data-chart=status]")
        await chart.locator("canvas").wait_for()
        assert await page.locator(".chart canvas").count() == 4  # by status; runs, tokens and cost by model
        ticks = await chart.get_attribute("data-x-ticks")
        assert re.fullmatch(r'\["[A-Z][a-z]{2} \d{1,2}"(,"[A-Z][a-z]{2} \d{1,2}")*\]', ticks), ticks
        today = timezone.localtime(now)
        assert f'"{today:%b} {today.day}"' in ticks  # the current day is labelled

        over = chart.locator(".u-over")
        box = await over.bounding_box()
        await over.hover(position={"x": box["width"] - 3, "y": box["height"] / 2})  # the last bucket: today
        legend = chart.locator(".u-legend")
        assert f"{today:%b} {today.day}, {today.year}" in await legend.locator(".u-series").first.inner_text()
        assert await value(legend, "success") == "2" and await value(legend, "error") == "0"
        await over.hover(position={"x": box["width"] * (3.5 / 7), "y": box["height"] / 2})  # three days ago
        assert await value(legend, "success") == "0" and await value(legend, "error") == "1"

        models = page.locator("[data-chart=traces] .u-legend")
        assert {"builtin", "gpt-4o-mini"} <= set(await models.locator(".u-label").all_inner_texts())
        await shot(page, "dashboard")

        await page.goto(f"http://{host}/dashboard/?range=24h")
        await page.locator("[data-chart=status] canvas").wait_for()
        hourly = await page.locator("[data-chart=status]").get_attribute("data-x-ticks")
        assert re.search(r'"\d{2}:00\\n[A-Z][a-z]{2} \d{1,2}"', hourly), hourly


async def value(legend, label: str) -> str:
    row = legend.locator(".u-series", has=legend.page.locator(".u-label", has_text=re.compile(f"^{label}$")))
    return await row.locator(".u-value").inner_text()
