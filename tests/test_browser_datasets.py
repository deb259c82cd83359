"""The dataset pages in a real headless Chromium against a real daphne: an experiment run from the
page, its progress shown live, with nothing blocked by the content security policy."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from evals.datasets import Item, add_items
from evals.models import Experiment
from tests.pages import XSS, shot
from tests.servers import daphne

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("configured_agent_db"),
    pytest.mark.browser,
]

WATCH = (
    "window.__blocked = [];"
    "document.addEventListener('securitypolicyviolation',"
    " (e) => window.__blocked.push(e.violatedDirective + ' ' + e.blockedURI));"
)


@database_sync_to_async
def dataset(items: list[Item]):
    made, _ = add_items("shop", None, items, description="questions about the shop")
    return made


async def test_an_experiment_run_from_the_dataset_page_shows_its_progress_live(page, slow_llm, settings):
    shop = await dataset(
        [
            Item("how many users are there?", "SELECT COUNT(*) FROM users"),
            Item(XSS, expected_answer="Alice"),
        ]
    )
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.add_init_script(WATCH)
    with daphne(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=slow_llm.url, OPENAI_MAX_RETRIES="0") as host:
        await page.goto(f"http://{host}/datasets/")
        await page.click(f"[data-dataset='{shop.pk}'] a")
        await page.wait_for_selector("[data-run-form]")
        assert await page.locator("[data-question]").nth(1).inner_text() == XSS  # shown as text
        await page.fill("[data-run-form] input[name=name]", "from the browser")
        await page.select_option("[data-run-form] select[name=model]", settings.OPENAI_MODEL)
        await page.fill("[data-run-form] input[name=concurrency]", "1")
        await page.click("[data-run]")
        await page.wait_for_selector("[data-progress][data-status=running]")
        await page.evaluate("window.__same_page = true")
        assert await page.locator("[data-progress-total]").inner_text() == "2"
        await shot(page, "dataset-experiment-running")

        await page.wait_for_selector("[data-progress-done]:text-is('1')", timeout=30000)  # one item done, live
        await page.wait_for_selector("[data-progress][data-status=finished]", timeout=60000)
        assert await page.evaluate("window.__same_page")  # updated in place, not reloaded
        assert await page.locator("[data-progress-done]").inner_text() == "2"
        assert await page.locator("[data-progress-status]").inner_text() == "finished"
        experiment = await Experiment.objects.aget()
        assert await page.locator(f"[data-experiment-status='{experiment.pk}']").inner_text() == "finished"
        verdicts = page.locator("[data-result-item] a.verdict")
        assert await verdicts.count() == 2
        assert all(
            href.startswith("/traces/")
            for href in await verdicts.evaluate_all("l => l.map(a => a.getAttribute('href'))")
        )
        await shot(page, "dataset-experiment-finished")

        await verdicts.first.click()
        await page.wait_for_url(f"http://{host}/traces/*/")
        assert await page.evaluate("window.__xss") is None and page.dialogs == []
        for path in ["/datasets/", f"/datasets/{shop.pk}/", f"/datasets/{shop.pk}/items/{await first_item(shop)}/"]:
            await page.goto(f"http://{host}{path}")
            await page.wait_for_load_state("networkidle")
            assert await page.evaluate("window.__blocked") == [], path
    assert errors == []


@database_sync_to_async
def first_item(dataset) -> int:
    return dataset.items.order_by("id").first().pk
