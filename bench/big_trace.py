"""The trace page of one long agent run: how soon its tree is on screen, and what it costs.

    python bench/big_trace.py                    # 1 root + 10,000 steps × (model call, SQL tool call)
    python bench/big_trace.py --steps 1000
    python bench/big_trace.py --backend mysql

Builds the trace the way an agent instrumented with OpenTelemetry sends it: OTLP/JSON exports
of 3,000 spans to a real daphne (``/v1/traces``), the steps as they end and the root span last.
Then measures the detail page: its server time and size (the median of three plain GETs), and in
headless Chromium the time from navigation to the first tree row on screen, the bytes transferred
by then, the DOM's node count, and the time to select step ``--pick`` (about the 25,000th run)
found by the page's search (or, where a page has no search, selected by its id).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.live import manage_shell, tracesite_env, wait_for_port

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
QUESTION = "Which customers ordered the most last quarter?"
SPANS_AN_EXPORT = 3000


def attributes(values: dict) -> list[dict]:
    return [{"key": key, "value": {"stringValue": value if isinstance(value, str) else json.dumps(value)}}
            for key, value in values.items()]  # fmt: skip


def spans(trace: str, steps: int) -> list[dict]:
    """The root's children and grandchildren in the order they end, then the root."""
    start = time.time_ns() - steps * 30_000_000 - 10**9
    root = uuid.uuid4().hex[:16]

    def span(span_id: str, parent: str | None, name: str, begin: int, end: int, values: dict) -> dict:
        return {"traceId": trace, "spanId": span_id, "parentSpanId": parent or "", "name": name,
                "startTimeUnixNano": str(begin), "endTimeUnixNano": str(end), "attributes": attributes(values)}  # fmt: skip

    found = []
    for number in range(1, steps + 1):
        begin = start + number * 30_000_000
        step, think, tool = (uuid.uuid4().hex[:16] for _ in range(3))
        sql = f"SELECT customer_id, SUM(total) FROM orders WHERE id > {number} GROUP BY customer_id"
        found.append(span(think, step, "chat gpt-4o-mini", begin, begin + 12_000_000, {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 20,
            "gen_ai.input.messages": [{"role": "user", "content": f"continue with step {number}"}],
            "gen_ai.output.messages": [{"role": "assistant", "parts": [{"type": "tool_call", "id": f"c{number}",
                                        "name": "run_sql", "arguments": {"sql": sql}}]}],
        }))  # fmt: skip
        found.append(span(tool, step, "execute_tool run_sql", begin + 13_000_000, begin + 20_000_000, {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "run_sql",
            "gen_ai.tool.call.arguments": {"sql": sql}, "gen_ai.tool.call.result": "42 rows",
        }))  # fmt: skip
        found.append(
            span(step, root, f"step_{number}", begin, begin + 25_000_000, {"gen_ai.operation.name": "invoke_agent"})
        )
    end = start + (steps + 1) * 30_000_000
    found.append(span(root, None, "invoke_agent analyst", start, end, {
        "gen_ai.operation.name": "invoke_agent", "input.value": QUESTION, "output.value": "Acme leads.",
    }))  # fmt: skip
    return found


def export(batch: list[dict]) -> bytes:
    resource = {"attributes": attributes({"service.name": "analyst"})}
    return json.dumps(
        {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {"name": "bench"}, "spans": batch}]}]}
    ).encode()


def get(port: int, path: str) -> tuple[float, int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    took = time.perf_counter() - started
    assert response.status == 200, (response.status, body[:300])
    return took, len(body)


async def browse(port: int, trace_id: str, pick: int, pick_id: str) -> dict[str, float]:
    from playwright.async_api import async_playwright

    url = f"http://127.0.0.1:{port}/traces/{trace_id}/"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = await browser.new_page(viewport={"width": 1300, "height": 900})
        page.set_default_timeout(300_000)
        started = time.perf_counter()
        await page.goto(url, wait_until="commit")
        await page.wait_for_selector("[data-spans] .span-row[data-run]", state="visible")
        on_screen = time.perf_counter() - started
        transferred = await page.evaluate(
            """() => [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")]
                 .reduce((sum, e) => sum + (e.transferSize || e.encodedBodySize || 0), 0)"""
        )
        await page.wait_for_load_state("load")
        nodes = await page.evaluate("document.getElementsByTagName('*').length")
        rows = await page.locator("[data-spans] .span-row").count()
        heading = page.locator("[data-run-panel] h3", has_text=f"Step {pick}")
        search = await page.locator("[data-search-input]").count()
        started = time.perf_counter()
        if search:
            await page.fill("[data-search-input]", f"step_{pick}")
            await page.press("[data-search-input]", "Enter")
        else:  # the page before its search: select the run by its id, scrolled into view
            await page.evaluate(
                "(id) => { document.querySelector(`[data-run='${id}']`).scrollIntoView(); window.tracesite.tree.select(id); }",
                pick_id,
            )
        await heading.wait_for()
        await page.locator(f"[data-spans] .span-row.selected[data-run='{pick_id}']").wait_for()
        selected = time.perf_counter() - started
        requests = await page.evaluate(
            """() => performance.getEntriesByType("resource").filter((e) => e.name.includes("/api/"))
                 .map((e) => `${e.name.split("/api/traces/")[1].slice(37, 90)} ${Math.round(e.startTime)}+${Math.round(e.duration)} ms`)"""
        )
        await browser.close()
    return {
        "on_screen": on_screen,
        "transferred": transferred,
        "nodes": nodes,
        "rows": rows,
        "selected": selected,
        "by_search": bool(search),
        "requests": requests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "mysql"], default="sqlite")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--pick", type=int, default=8333, help="the step selected (8,333: about the 25,000th run)")
    parser.add_argument("--port", type=int, default=8873)
    args = parser.parse_args()

    env = tracesite_env(args.backend, 1)
    env["TRACE_OTLP_COMPLETE_AFTER_SECONDS"] = "1"
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    key = manage_shell(
        env,
        "from django.contrib.auth import get_user_model; from traces.models import ApiToken; "
        "user, _ = get_user_model().objects.get_or_create(username='bench'); print(ApiToken.issue(user, 'bench')[1])",
    )
    otel_id = uuid.uuid4().hex
    every = spans(otel_id, args.steps)
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / "tracesite-bench-big-trace.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(args.port), "tracesite.asgi:application"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_port(args.port, server)
        time.sleep(2)
        sent = time.perf_counter()
        for at in range(0, len(every), SPANS_AN_EXPORT):
            connection = http.client.HTTPConnection("127.0.0.1", args.port, timeout=600)
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
            connection.request("POST", "/v1/traces", export(every[at : at + SPANS_AN_EXPORT]), headers)
            response = connection.getresponse()
            assert response.status == 200, (response.status, response.read()[:300])
            response.read()
        found = ""
        for _ in range(600):
            found = manage_shell(
                env,
                "from traces.models import Trace, Run; from traces.ingest.ingestor import trace_uuid; "
                f"t = Trace.objects.filter(pk=trace_uuid('{otel_id}')).first(); "
                f"s = t and Run.objects.filter(trace=t, name='step_{args.pick}').first(); "
                "print(f'{t.pk} {t.status} {t.total_runs} {s.pk} {t.request!r} {t.duration_ms}' if s else 'none')",
            )
            if found != "none" and found.split()[1] != "running":
                break
            time.sleep(1)
        ingested = time.perf_counter() - sent
        trace_id, status, runs, pick_id, *rest = found.split()
        print(f"trace {trace_id}: {status}, {runs} runs, stored in {ingested:.1f} s; title {' '.join(rest[:-1])}")
        path = f"/traces/{trace_id}/"
        timings = [get(args.port, path) for _ in range(3)]
        server_time = statistics.median(took for took, _ in timings)
        size = timings[0][1]
        seen = asyncio.run(browse(args.port, trace_id, args.pick, pick_id))
    finally:
        server.terminate()
        server.wait(30)
    how = "found by search" if seen["by_search"] else "selected by id"
    print(f"detail page server time   {1000 * server_time:8.0f} ms (median of 3)")
    print(f"detail page size          {size / 1e6:8.2f} MB")
    print(f"tree on screen after      {1000 * seen['on_screen']:8.0f} ms")
    print(f"transferred by then       {seen['transferred'] / 1e6:8.2f} MB")
    print(f"DOM nodes                 {seen['nodes']:8d} ({seen['rows']} tree rows)")
    print(f"step {args.pick} selected in      {1000 * seen['selected']:8.0f} ms ({how})")
    for request in seen["requests"]:
        print(f"  {request}")


if __name__ == "__main__":
    main()
