"""A trace of a long agent run in a real headless Chromium against a real daphne: the tree is a
window of rows over the trace's runs, loaded as it is scrolled and searched, and live runs append
to it (the figures for 30,001 spans are bench/big_trace.py's)."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from tests.factories import make_agent_trace
from tests.servers import daphne
from traces.models import Run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

STEPS = 300


async def rows_in_dom(page) -> int:
    return await page.locator("[data-spans] .span-row").count()


async def test_a_long_trace_draws_a_window_of_its_runs_and_loads_the_rest_as_it_scrolls(page):
    trace = await database_sync_to_async(make_agent_trace)(STEPS)
    with daphne() as host:
        await page.goto(f"http://{host}/traces/{trace.pk}/")
        await page.wait_for_selector("[data-spans] .span-row[data-run-type=tool]")
        assert await page.locator("[data-run-type=agent] .span-name").first.inner_text() == "agent"
        assert await page.locator("[data-run-type=agent] .span-name").nth(1).inner_text() == "Step 1"
        assert 10 < await rows_in_dom(page) < 100  # of 901 runs

        await page.eval_on_selector("[data-scroller]", "s => { s.scrollTop = s.scrollHeight; }")
        last = page.locator("[data-spans] .span-row .span-name", has_text=f"Step {STEPS}")
        await last.wait_for(timeout=10000)
        await page.eval_on_selector("[data-scroller]", "s => { s.scrollTop = s.scrollHeight; }")
        await page.wait_for_selector("[data-spans] .span-row[data-run-type=tool] >> nth=-1")
        assert await rows_in_dom(page) < 100
        assert await page.locator("[data-spans] .span-loading").count() == 0

        # Search finds a run deep in the tree; selecting it expands down to it and shows it.
        await page.eval_on_selector("[data-scroller]", "s => { s.scrollTop = 0; }")
        await page.fill("[data-search-input]", "run_sql")
        await page.select_option("[data-search-status]", "error")
        await page.click("[data-tree-search] button[type=submit]")
        await page.wait_for_selector("[data-search-hits] li >> nth=2")
        await page.locator("[data-search-hits] button").nth(1).click()
        target = await Run.objects.aget(trace=trace, run_type="tool", parent__name="step_200")
        row = page.locator(f"[data-spans] .span-row.selected[data-run='{target.pk}']")
        await row.wait_for(timeout=10000)
        assert await row.is_visible()
        panel = page.locator("[data-run-panel]")
        await panel.locator("text=SELECT 200").first.wait_for(timeout=10000)
        assert "OperationalError: no such table" in await panel.inner_text()

        # Next error from there: the tool call of step 300.
        await page.click("[data-next-error]")
        following = await Run.objects.aget(trace=trace, run_type="tool", parent__name="step_300")
        await page.wait_for_selector(f"[data-spans] .span-row.selected[data-run='{following.pk}']", timeout=10000)
        assert await rows_in_dom(page) < 100


async def test_a_live_long_trace_appends_runs_without_drawing_them_all(page):
    trace = await database_sync_to_async(make_agent_trace)(STEPS, status="running")
    root = await Run.objects.aget(trace=trace, parent__isnull=True)
    with daphne() as host:
        await page.goto(f"http://{host}/traces/{trace.pk}/")
        await page.wait_for_selector("[data-spans] .span-row[data-run-type=tool]")
        # Runs as the socket delivers them, 50 new steps each with a model call.
        await page.evaluate(
            """([traceId, rootId, steps]) => {
                const tree = window.tracesite.tree;
                const at = new Date().toISOString();
                for (let n = steps + 1; n <= steps + 50; n++) {
                    const run = (id, name, type, parent) => ({run_id: id, trace_id: traceId, parent_run_id: parent,
                        name, run_type: type, status: "running", start_time: at, end_time: null});
                    tree.apply({event_type: "step_started", data: run(`s${n}`, `step_${n}`, "agent", rootId)});
                    tree.apply({event_type: "think_started", data: run(`t${n}`, "think", "think", `s${n}`)});
                }
            }""",
            [str(trace.pk), str(root.pk), STEPS],
        )
        await page.eval_on_selector("[data-scroller]", "s => { s.scrollTop = s.scrollHeight; }")
        await page.wait_for_selector(f"[data-spans] .span-row[data-run=s{STEPS + 50}]", timeout=10000)
        await page.wait_for_selector(f"[data-spans] .span-row[data-run=t{STEPS + 50}]")
        assert await rows_in_dom(page) < 100
        names = await page.eval_on_selector_all(
            "[data-spans] .span-row[data-run-type=agent] .span-name", "nodes => nodes.map(n => n.textContent)"
        )
        assert names[-1] == f"Step {STEPS + 50}"


async def test_the_tree_draws_without_the_markdown_and_highlighting_libraries(page):
    """markdown-it, DOMPurify and highlight.js are loaded when a panel first shows markdown or code:
    with them unreachable the tree still draws, and a run's code shows as plain text."""
    trace = await database_sync_to_async(make_agent_trace)(30)
    await page.route("**/static/vendor/**", lambda route: route.abort())
    with daphne() as host:
        await page.goto(f"http://{host}/traces/{trace.pk}/")
        await page.locator("[data-spans] .span-row[data-run-type=tool]").first.click()
        sql = page.locator("[data-run-panel] pre.sql")
        await sql.wait_for()
        assert await sql.inner_text() == "SELECT 1"
        assert await sql.locator("span").count() == 0  # not coloured: plain text
