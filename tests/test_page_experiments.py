"""An experiment run from the dataset page, through the server's whole ASGI application: the POST
hands it to the server's runtime, which runs it after the response (every item an ordinary
trace, judged), its progress.json says how far it is, and the server's stop interrupts it."""

from __future__ import annotations

import asyncio
import json
import re
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import pytest
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator
from django.urls import reverse

from evals.datasets import Item, add_items
from evals.models import Experiment, ExperimentItem
from traces.models import Event, Trace
from traces.runtime import get_runtime
from tracesite.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("configured_agent_db")]

ITEMS = [
    Item("how many orders per country?", "SELECT country, COUNT(*) FROM orders GROUP BY country ORDER BY country"),
    Item("how many users are there?", "SELECT COUNT(*) FROM products"),  # wrong on purpose: counts products
    Item("which country has the most users?", expected_answer="canada"),
]


class Browser:
    """One browser's cookies, through the server's whole ASGI application."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    async def request(self, method: str, path: str, form: dict | None = None) -> dict:
        headers = [(b"host", b"localhost")]
        if self.cookies:
            headers.append((b"cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()).encode()))
        if form is not None:
            headers.append((b"content-type", b"application/x-www-form-urlencoded"))
        body = urlencode(form).encode() if form is not None else b""
        response = await HttpCommunicator(application, method, path, body=body, headers=headers).get_response(30)
        for name, value in response["headers"]:
            if name.lower() == b"set-cookie":
                self.cookies.update({k: m.value for k, m in SimpleCookie(value.decode()).items()})
        return response

    async def run_experiment(self, dataset_id: int, **fields: str) -> tuple[dict, Experiment]:
        """Open the dataset page and send its "Run experiment" form."""
        page = await self.request("GET", reverse("evals:dataset", args=[dataset_id]))
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page["body"])
        assert token is not None
        form = {"csrfmiddlewaretoken": token.group(1).decode(), "concurrency": "2", "model": "builtin", **fields}
        response = await self.request("POST", reverse("evals:experiment_run", args=[dataset_id]), form)
        return response, await Experiment.objects.alatest("started_at")

    async def progress(self, experiment: Experiment) -> dict:
        response = await self.request("GET", reverse("evals:experiment_progress", args=[experiment.pk]))
        assert response["status"] == 200
        return json.loads(response["body"])

    async def progress_until_ended(self, experiment: Experiment, seconds: float = 60) -> list[dict]:
        seen = []
        async with asyncio.timeout(seconds):
            while not seen or seen[-1]["status"] == Experiment.Status.RUNNING:
                seen.append(await self.progress(experiment))
                await asyncio.sleep(0.1)
        return seen


@database_sync_to_async
def dataset(items: list[Item]):
    made, _ = add_items("shop", None, items)
    return made


async def test_an_experiment_run_from_the_page_runs_after_the_response_and_reports_its_progress():
    shop = await dataset(ITEMS)
    browser = Browser()
    response, experiment = await browser.run_experiment(shop.pk, name="from the page", max_steps="8")
    assert response["status"] == 302
    assert dict(response["headers"])[b"Location"].decode() == f"/datasets/{shop.pk}/#progress"
    assert (experiment.name, experiment.model, experiment.max_steps, experiment.concurrency) == (
        "from the page", "builtin", 8, 2
    )  # fmt: skip
    assert len(get_runtime().jobs) == 1  # the server's runtime holds the run

    seen = await browser.progress_until_ended(experiment)
    assert seen[0]["total"] == 3 and seen[0]["done"] < 3  # it was still running after the response
    done = [report["done"] for report in seen]
    assert done == sorted(done)
    last = seen[-1]
    assert (last["status"], last["done"], last["total"], last["judged"], last["passed"]) == ("finished", 3, 3, 3, 2)
    assert last["execution_accuracy"] == pytest.approx(0.5)
    assert sorted(result["verdict"] for result in last["results"]) == ["failed", "passed", "passed"]
    assert not get_runtime().jobs

    rows = [row async for row in ExperimentItem.objects.filter(experiment=experiment).order_by("item_id")]
    assert [row.passed for row in rows] == [True, False, True]
    assert {result["trace_url"] for result in last["results"]} == {f"/traces/{row.trace_id}/" for row in rows}
    traces = [trace async for trace in Trace.objects.filter(pk__in=[row.trace_id for row in rows])]
    assert len(traces) == 3 and {trace.status for trace in traces} == {"success"}
    assert {trace.session_id for trace in traces} == {f"experiment-{experiment.pk}"}
    for trace in traces:
        assert await Event.objects.filter(trace=trace).acount() == trace.last_seq > 0
    experiment = await Experiment.objects.aget(pk=experiment.pk)
    assert experiment.ended_at is not None and experiment.summary["passed"] == 2

    page = await browser.request("GET", reverse("evals:dataset", args=[shop.pk]))
    assert f'href="/traces/{rows[0].trace_id}/"'.encode() in page["body"]
    assert "Experiment “from the page” started: 3 item(s).".encode() in page["body"]


async def test_the_servers_stop_interrupts_a_running_experiment(slow_llm, settings):
    shop = await dataset(ITEMS[:2])
    browser = Browser()
    response, experiment = await browser.run_experiment(shop.pk, model=settings.OPENAI_MODEL, concurrency="1")
    assert response["status"] == 302
    running = Trace.objects.filter(session_id=f"experiment-{experiment.pk}", status=Trace.Status.RUNNING)
    async with asyncio.timeout(20):
        while not await running.aexists():
            await asyncio.sleep(0.05)
    trace = await running.aget()

    await get_runtime().stop(seconds=10)

    experiment = await Experiment.objects.aget(pk=experiment.pk)
    assert experiment.status == Experiment.Status.INTERRUPTED and experiment.ended_at is not None
    trace = await Trace.objects.aget(pk=trace.pk)
    assert trace.status == Trace.Status.ERROR and trace.error.startswith("interrupted: ")
    assert not get_runtime().jobs
    # The second item never started.
    assert await Trace.objects.filter(session_id=f"experiment-{experiment.pk}").acount() == 1


async def test_a_stopping_server_takes_no_new_experiment():
    shop = await dataset(ITEMS[:1])
    browser = Browser()
    page = await browser.request("GET", reverse("evals:dataset", args=[shop.pk]))
    assert page["status"] == 200
    runtime = get_runtime()
    await runtime.stop(seconds=5)
    response, experiment = await browser.run_experiment(shop.pk)
    assert response["status"] == 503
    assert experiment.status == Experiment.Status.INTERRUPTED
    assert not await Trace.objects.aexists()
