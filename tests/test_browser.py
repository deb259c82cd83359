"""The pages in a real headless Chromium against a real daphne."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from tests.pages import XSS, ask, shot
from tests.servers import daphne
from traces.models import Event, Trace

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("configured_agent_db"),
    pytest.mark.browser,
]


async def test_it_answers_a_question_live_with_the_result_table(page):
    with daphne() as host:
        await ask(page, host, "显示用户表的10条用户数据")
        await page.wait_for_selector(".event-done", timeout=20000)
        answer = page.locator("[data-answer]")
        assert "Alice" in await answer.inner_text()
        # The answer shows as text at once and as markdown when the markdown library has loaded.
        await answer.locator("table tbody tr").first.wait_for()
        assert await answer.locator("table tbody tr").count() == 10
        assert await page.locator(".event-tool table.result").count() >= 1
        assert await page.locator("pre.sql .hljs-keyword").first.inner_text() == "SELECT"
        assert "built-in offline model" in await page.locator("[data-model]").inner_text()
        await shot(page, "live")


async def test_it_cancels_a_run(page, slow_llm):
    with daphne(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=slow_llm.url, OPENAI_MAX_RETRIES="0") as host:
        await ask(page, host, "how many users?")
        await page.wait_for_selector(".event-think .stream:not(:empty)", timeout=20000)
        await page.click("[data-cancel]")
        await page.wait_for_selector(".event-done", timeout=20000)
        assert await page.locator("[data-trace-status]").inner_text() == "cancelled"
        trace = await Trace.objects.aget()
        assert trace.status == "cancelled"


async def test_a_dropped_socket_resumes_with_every_seq_exactly_once(page, slow_llm):
    with daphne(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=slow_llm.url, OPENAI_MAX_RETRIES="0") as host:
        await ask(page, host, "how many users?")
        await page.wait_for_selector(".event-think .stream:not(:empty)", timeout=20000)
        await page.evaluate("window.tracesite.socket.drop()")
        await page.wait_for_selector("[data-connection][data-state=reconnecting]", state="attached", timeout=5000)
        await page.wait_for_selector(".event-done", timeout=30000)
        seqs = await page.evaluate("window.tracesite.view.seqs")
        trace = await Trace.objects.aget()
        assert sorted(seqs) == list(range(1, trace.last_seq + 1))  # all of them
        assert len(seqs) == len(set(seqs))  # none twice
        rendered = await page.eval_on_selector_all("[data-seq]", "nodes => nodes.map(n => Number(n.dataset.seq))")
        assert len(rendered) == len(set(rendered))


async def test_events_that_arrive_late_are_shown_in_seq_order(page):
    """A resume that comes after the server's hold delivers some events after later ones."""
    with daphne() as host:
        await ask(page, host, "显示用户表的10条用户数据")
        await page.wait_for_selector(".event-done", timeout=20000)
        trace = await Trace.objects.aget()
        envelopes = [
            e async for e in Event.objects.filter(trace=trace).order_by("seq").values_list("envelope", flat=True)
        ]
        order = [*range(0, 5), *range(20, len(envelopes)), *range(5, 20)]  # 1–5, 21–last, then 6–20
        await page.evaluate(
            "(texts) => { const view = window.tracesite.view; view.reset(); for (const t of texts) view.apply(JSON.parse(t)); }",
            [envelopes[i] for i in order],
        )
        rendered = await page.eval_on_selector_all(
            "[data-timeline] [data-seq]", "nodes => nodes.map(n => Number(n.dataset.seq))"
        )
        assert rendered == sorted(rendered) and len(rendered) >= 10


async def test_it_replays_a_finished_trace(page):
    with daphne() as host:
        await ask(page, host, "top 5 products by price")
        await page.wait_for_selector(".event-done", timeout=20000)
        trace = await Trace.objects.aget()
        await page.goto(f"http://{host}/traces/{trace.pk}/")
        assert await page.locator(".span-row").count() >= 4
        await page.locator(".span-row[data-run-type=tool]").last.click()
        await page.locator("[data-run-panel] >> text=SQL guard: allowed").wait_for()  # the run, fetched when selected
        await shot(page, "detail")
        await page.click("[data-tab-button=timeline]")
        await page.click("[data-replay='0']")
        await page.wait_for_selector(".event-replay >> text=Replay finished", timeout=20000)
        replayed = await page.evaluate("window.tracesite.view.seqs")
        stored = await database_sync_to_async(
            lambda: list(Event.objects.filter(trace=trace).order_by("seq").values_list("seq", flat=True))
        )()
        assert replayed == stored  # every stored event, in order, once
        assert await page.locator(".event.replayed").count() > 0
        assert "Alice" not in await page.locator("[data-answer]").inner_text()
        assert "Standing Desk" in await page.locator("[data-answer]").inner_text()


async def test_untrusted_text_is_shown_as_text_and_never_runs(page):
    with daphne() as host:
        await ask(page, host, XSS)
        await page.wait_for_selector(".event-done", timeout=20000)
        assert "<img src=x" in await page.locator(".event-trace q").inner_text()
        trace = await Trace.objects.aget()
        for url in (f"/traces/{trace.pk}/", "/traces/?q=onerror", "/", "/dashboard/"):
            await page.goto(f"http://{host}{url}")
            await page.wait_for_load_state("networkidle")
        await page.goto(f"http://{host}/traces/{trace.pk}/")
        assert "<script>" in await page.locator("h1.question").inner_text()
        assert await page.evaluate("window.__xss") is None
        assert page.dialogs == []


async def test_history_search_finds_a_chinese_question(page):
    with daphne() as host:
        await ask(page, host, "用户的平均年龄")
        await page.wait_for_selector(".event-done", timeout=20000)
        await ask(page, host, "how many orders per country?")
        await page.wait_for_selector(".event-done", timeout=20000)
        await page.goto(f"http://{host}/traces/")
        await page.fill("input[name=q]", "平均年龄")
        await page.click("form.filters button[type=submit]")
        rows = page.locator("tbody tr[data-trace-row]")
        assert await rows.count() == 1
        assert "用户的平均年龄" in await rows.first.inner_text()
        await shot(page, "history")


async def test_the_dashboard_renders(page):
    with daphne() as host:
        await ask(page, host, "how many users?")
        await page.wait_for_selector(".event-done", timeout=20000)
        await page.goto(f"http://{host}/dashboard/")
        await page.locator("[data-chart=status] canvas").wait_for()
        assert "describe_schema" in await page.locator("body").inner_text()
        await shot(page, "dashboard")


OPEN_SOCKET = """async (url) => await new Promise((resolve) => {
    const socket = new WebSocket(url);
    socket.onmessage = (event) => { socket.close(); resolve("open: " + JSON.parse(event.data).event_type); };
    socket.onclose = (event) => resolve("closed " + event.code);
})"""


async def test_a_page_on_another_port_cannot_open_the_socket_as_the_logged_in_user(page, staff_user):
    """WebSocket hijacking: the admin's browser, on a page served from another port of the same
    host, must not get a socket (which would carry the admin's session cookie)."""
    import http.server
    import threading

    from tests.servers import free_port

    other_port = free_port()
    other = http.server.ThreadingHTTPServer(("127.0.0.1", other_port), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        with daphne() as host:
            await page.goto(f"http://{host}/admin/login/")
            await page.fill("#id_username", staff_user.username)
            await page.fill("#id_password", "pw-alice-123")
            await page.click("input[type=submit]")
            await page.wait_for_url(f"http://{host}/admin/")
            same_origin = await page.evaluate(OPEN_SOCKET, f"ws://{host}/ws/hijack")
            assert same_origin == "open: connection_established"
            await page.goto(f"http://127.0.0.1:{other_port}/")
            cross_origin = await page.evaluate(OPEN_SOCKET, f"ws://{host}/ws/hijack")
            assert cross_origin == "closed 1006", cross_origin  # refused at the handshake (HTTP 403)
    finally:
        other.shutdown()


async def test_run_again_starts_from_the_button_only_never_from_a_link_or_a_reload(page):
    with daphne() as host:
        await ask(page, host, "how many users are there?")
        await page.wait_for_selector(".event-done", timeout=20000)
        first = await database_sync_to_async(lambda: Trace.objects.get())()
        count = database_sync_to_async(Trace.objects.count)
        # A link to ?rerun= (another site's, say) fills in the question and starts nothing.
        await page.goto(f"http://{host}/?rerun={first.pk}")
        await page.wait_for_selector("[data-connection][data-state=connected]")
        assert await page.input_value("textarea") == "how many users are there?"
        await page.wait_for_timeout(1500)
        assert await count() == 1
        # The detail page's button does start it, once: a reload does not start it again.
        await page.goto(f"http://{host}/traces/{first.pk}/")
        await page.click("[data-rerun]")
        await page.wait_for_selector(".event-done", timeout=20000)
        assert await count() == 2
        again = await database_sync_to_async(lambda: Trace.objects.exclude(pk=first.pk).get())()
        assert again.rerun_of_id == first.pk
        await page.reload()
        await page.wait_for_selector("[data-connection][data-state=connected]")
        await page.wait_for_timeout(1500)
        assert await count() == 2


async def test_every_page_runs_under_the_content_security_policy_with_nothing_blocked(page, staff_user):
    """No inline script anywhere: the pages, the live socket and the admin pass the CSP."""
    await page.add_init_script(
        "window.__blocked = [];"
        "document.addEventListener('securitypolicyviolation',"
        " (e) => window.__blocked.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    with daphne() as host:
        await ask(page, host, "how many orders per country?")
        await page.wait_for_selector(".event-done", timeout=20000)
        trace = await database_sync_to_async(lambda: Trace.objects.get())()
        response = await page.goto(f"http://{host}/traces/")
        assert "script-src 'self'" in response.headers["content-security-policy"]
        await page.goto(f"http://{host}/admin/login/")
        await page.fill("#id_username", staff_user.username)
        await page.fill("#id_password", "pw-alice-123")
        await page.click("input[type=submit]")
        await page.wait_for_url(f"http://{host}/admin/")
        visited = {}
        for path in [
            "/",
            "/traces/",
            f"/traces/{trace.pk}/",
            f"/traces/compare/?a={trace.pk}&b={trace.pk}",
            f"/sessions/{trace.session_id}/",
            "/dashboard/",
            "/admin/",
            "/admin/traces/trace/",
            f"/admin/traces/trace/{trace.pk}/change/",
            "/accounts/password/",
        ]:
            await page.goto(f"http://{host}{path}")
            await page.wait_for_load_state("networkidle")
            visited[path] = await page.evaluate("window.__blocked")
        await page.goto(f"http://{host}/traces/{trace.pk}/")
        await page.click("[data-replay='0']")
        await page.wait_for_timeout(500)
        visited["replay"] = await page.evaluate("window.__blocked")
        assert all(blocked == [] for blocked in visited.values()), visited
        await page.goto(f"http://{host}/")
        await page.wait_for_selector("[data-connection][data-state=connected]")  # the socket is allowed
