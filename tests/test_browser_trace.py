"""The trace view and the live page in a real headless Chromium against a real daphne: the run
tree on a time axis, the run panel, the page's scroll position, and how runs read."""

from __future__ import annotations

import json
import re

import pytest
from channels.db import database_sync_to_async

from tests.pages import ask
from tests.servers import daphne
from traces.models import Run, Trace

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("configured_agent_db"),
    pytest.mark.browser,
]

QUESTION = "how many orders per country?"


async def finished_trace(page, host: str, question: str = QUESTION) -> Trace:
    await ask(page, host, question)
    await page.wait_for_selector(".event-done", timeout=20000)
    return await Trace.objects.order_by("-started_at").afirst()


async def rendered_runs(page) -> list[str]:
    return await page.eval_on_selector_all("[data-spans] .span-row", "rows => rows.map(r => r.dataset.run)")


async def test_the_trace_view_opens_at_its_top_with_the_run_tree_on_a_time_axis(page):
    with daphne() as host:
        trace = await finished_trace(page, host)
        await page.goto(f"http://{host}/traces/{trace.pk}/")
        await page.wait_for_selector("[data-spans] .span-row")
        assert await page.evaluate("window.scrollY") == 0
        assert await page.locator("h1.question").is_visible()
        # The whole view fits the window: no page scroll, the panes scroll on their own.
        assert await page.evaluate("document.documentElement.scrollHeight <= window.innerHeight + 1")

        runs = {str(run.pk): run async for run in Run.objects.filter(trace=trace).select_related("parent")}
        order = await rendered_runs(page)
        assert sorted(order) == sorted(runs)
        for position, run_id in enumerate(order):  # every run below its parent
            parent = runs[run_id].parent_id
            if parent:
                assert order.index(str(parent)) < position

        ticks = await page.eval_on_selector_all(".span-axis .tick", "ticks => ticks.map(t => t.textContent)")
        assert len(ticks) >= 3 and ticks[0] == "0 ms"
        assert all(re.fullmatch(r"\d+(\.\d+)? (ms|s)", tick) for tick in ticks)
        lefts = await page.eval_on_selector_all(
            "[data-spans] .span-row[data-run-type=agent] .bar", "bars => bars.map(b => parseFloat(b.style.left))"
        )
        assert lefts == sorted(lefts) and lefts[-1] > lefts[0]  # steps laid out in time

        # Collapsing a step hides its runs; expanding shows them again.
        before = len(order)
        await page.locator("[data-spans] .span-row[data-run-type=agent] .toggle").first.click()
        assert len(await rendered_runs(page)) < before
        await page.locator("[data-spans] .span-row[data-run-type=agent] .toggle").first.click()
        assert len(await rendered_runs(page)) == before

        # A finished trace shows no connection state.
        assert not await page.locator("[data-connection]").is_visible()


async def test_a_child_that_starts_in_the_same_millisecond_sorts_under_its_step(page):
    with daphne() as host:
        trace = await finished_trace(page, host)
        await page.goto(f"http://{host}/traces/{trace.pk}/")
        at = "2026-01-01T00:00:00.000Z"

        def run(run_id, name, run_type, parent=None):
            return {
                "run_id": run_id,
                "parent_run_id": parent,
                "name": name,
                "run_type": run_type,
                "status": "success",
                "start_time": at,
                "end_time": at,
                "duration_ms": 0,
            }

        messages = [  # the think arrives first, with the very same start time as its step
            {"event_type": "think_completed", "timestamp": at, "data": run("t1", "think", "think", "s1")},
            {"event_type": "run_completed", "timestamp": at, "data": run("s1", "step_1", "agent")},
        ]
        await page.evaluate(
            "(messages) => { const t = window.tracesite.tree; t.reset(); t.applyNow(messages); }", messages
        )
        assert await rendered_runs(page) == ["s1", "t1"]
        assert await page.locator("[data-run=s1] .span-name").inner_text() == "Step 1"


async def test_the_run_panel_shows_what_a_model_call_was_sent_and_what_a_tool_ran(page):
    with daphne() as host:
        trace = await finished_trace(page, host)
        await page.goto(f"http://{host}/traces/{trace.pk}/")
        panel = page.locator("[data-run-panel]")
        assert "orders" in await panel.inner_text()  # nothing selected: the answer

        await page.locator("[data-spans] .span-row[data-run-type=think]").nth(1).click()
        await panel.locator(".message-tool").wait_for()  # the run in full, fetched when it is selected
        text = await panel.inner_text()
        assert "MESSAGES SENT (4)" in text.upper()
        assert "read-only" in text and QUESTION in text  # the system prompt and the question
        assert await panel.locator(".message-assistant .tool-call").count() == 1  # the first call's answer
        assert await panel.locator(".message-tool").count() == 1  # and its result
        assert "describe_schema, run_sql" in text  # the tools offered
        assert '"model": "builtin"' in text  # the parameters
        assert await panel.locator(".tool-call").count() >= 2  # what came back: another tool call

        await page.locator("[data-spans] .span-row[data-run-type=tool]").last.click()
        await panel.locator("pre.sql").wait_for()
        text = await panel.inner_text()
        assert "ARGUMENTS" in text.upper() and "SQL guard: allowed" in text
        assert await panel.locator("pre.sql .hljs-keyword").first.inner_text() == "SELECT"
        tool = await Run.objects.filter(trace=trace, name="run_sql").alast()
        assert await panel.locator("table.result tbody tr").count() == len(tool.outputs["rows"]) > 0


async def test_feedback_is_saved_with_labelled_buttons_and_the_page_stays_at_its_top(page):
    with daphne() as host:
        trace = await finished_trace(page, host)
        await page.goto(f"http://{host}/traces/{trace.pk}/")
        good = page.locator("button[name=rating][value=up]")
        assert await good.inner_text() == "Good" and await good.locator("svg").count() == 1
        assert await page.locator("button[name=rating][value=down]").inner_text() == "Bad"
        await page.fill("input[name=comment]", "right numbers")
        await good.click()
        await page.wait_for_selector("button[name=rating][value=up].chosen")
        assert await page.evaluate("window.scrollY") == 0
        trace = await Trace.objects.aget(pk=trace.pk)
        assert trace.feedback == 1 and trace.feedback_comment == "right numbers"


async def test_the_live_page_names_steps_and_durations_as_people_read_them(page):
    with daphne() as host:
        await finished_trace(page, host)
        timeline = await page.locator("[data-timeline]").inner_text()
        assert "Step 1" in timeline and "step_1" not in timeline
        assert " in 0 ms" not in timeline
        assert await page.locator(".event-done.event-done-success").count() == 1

        # While a tool runs, the progress label says so (not "thinking").
        await page.evaluate(
            """() => {
                const view = window.tracesite.view;
                view.reset();
                const run = (id, name, type) => ({run_id: id, name, run_type: type, status: "running"});
                view.apply({event_type: "step_started", data: run("s", "step_2", "agent")});
                view.apply({event_type: "status_update", data: {current_step: 2, max_steps: 10, message: "Step 2: thinking", progress_percentage: 10}});
                view.apply({event_type: "think_started", data: run("t", "think", "think")});
                view.apply({event_type: "tool_started", data: run("u", "run_sql", "tool")});
            }"""
        )
        assert await page.locator("[data-progress-label]").inner_text() == "step 2 of 10 · running run_sql"


async def test_a_new_run_does_not_keep_the_last_runs_status_and_a_cancelled_line_is_not_green(page, slow_llm):
    with daphne(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=slow_llm.url, OPENAI_MAX_RETRIES="0") as host:
        await ask(page, host, "how many users?")
        await page.wait_for_selector(".event-think .stream:not(:empty)", timeout=20000)
        await page.click("[data-cancel]")
        done = page.locator(".event-done")
        await done.wait_for(timeout=20000)
        assert await page.locator("[data-trace-status]").inner_text() == "cancelled"
        assert "event-done-cancelled" in await done.get_attribute("class")
        success_border = "rgb(187, 247, 208)"
        assert await done.evaluate("n => getComputedStyle(n).borderTopColor") != success_border

        await page.fill("textarea", "how many orders?")
        await page.keyboard.press("Enter")
        await page.wait_for_selector(".event-trace")
        assert await page.locator("[data-trace-status]").inner_text() in ("", "running")
        await page.click("[data-cancel]")
        await page.wait_for_selector(".event-done", timeout=20000)


async def test_side_panel_badges_stay_round_beside_long_questions(page):
    long_question = "how many orders were placed per country and per month across every year on record " * 2
    await database_sync_to_async(lambda: _make_trace(long_question))()
    with daphne() as host:
        await page.goto(f"http://{host}/")
        badge = page.locator("[data-recent] .badge").first
        box = await badge.bounding_box()
        row = await page.locator("[data-recent] li").first.bounding_box()
        assert row["height"] > 2 * box["height"]  # the question wraps over lines
        assert box["height"] < 24 and box["width"] > box["height"]  # the badge keeps one line


def _make_trace(request: str) -> Trace:
    from tests.factories import make_trace

    return make_trace(request)


async def test_answers_render_markdown_through_the_libraries_and_unsafe_markup_stays_inert(page):
    answer = "\n".join(
        [
            "**12** orders, `SELECT 1`",
            "",
            "| country | n |",
            "|---|---|",
            "| France | 3 |",
            "",
            "[click](javascript:window.__xss=1) ![pixel](http://example.invalid/p.png) <b onclick=x>raw</b>",
            "",
            "```sql",
            "SELECT country FROM orders",
            "```",
        ]
    )
    with daphne() as host:
        await page.goto(f"http://{host}/")
        await page.wait_for_selector("[data-connection][data-state=connected]")
        await page.evaluate(
            "(answer) => window.tracesite.view.apply({event_type: 'trace_completed', data: "
            "{status: 'success', duration_ms: 1, total_runs: 1, final_response: answer}})",
            answer,
        )
        rendered = page.locator("[data-answer] .markdown")
        assert await rendered.locator("strong").inner_text() == "12"
        assert await rendered.locator("table tbody tr").count() == 1
        assert await rendered.locator("pre code .hljs-keyword").first.inner_text() == "SELECT"
        assert await rendered.locator("img, b, [onclick]").count() == 0
        assert await rendered.locator("a[href^='javascript']").count() == 0
        assert "<b onclick=x>raw</b>" in await rendered.inner_text()  # raw HTML stays text
        assert await page.evaluate("window.__xss") is None


def test_the_vendored_libraries_match_the_lock_file():
    """static/vendor/ is what `make vendor` copies from the versions frontend/package-lock.json pins."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    lock = json.loads((root / "frontend/package-lock.json").read_text())["packages"]
    heads = {
        "markdown-it": (root / "static/vendor/markdown-it.min.js").read_text()[:200],
        "dompurify": (root / "static/vendor/purify.es.mjs").read_text()[:200],
        "@highlightjs/cdn-assets": (root / "static/vendor/highlight/core.min.js").read_text()[:200],
    }
    for package, head in heads.items():
        assert lock[f"node_modules/{package}"]["version"] in head, package
