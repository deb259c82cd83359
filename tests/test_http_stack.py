"""The HTTP middleware stack runs on the event loop: no request hops to a thread for it."""

from __future__ import annotations

import threading

import pytest
from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils.module_loading import import_string

from traces.pages.staticfiles import StaticFilesMiddleware


def test_every_middleware_can_run_on_the_event_loop():
    # One synchronous-only middleware makes Django run the whole chain in a worker thread (the
    # view back on the loop), which cost a tenth of the server's CPU for each OTLP export.
    sync_only = [path for path in settings.MIDDLEWARE if not getattr(import_string(path), "async_capable", False)]
    assert sync_only == []


@pytest.mark.asyncio
async def test_static_files_are_served_and_the_rest_passes_on_in_the_loops_thread(tmp_path, settings):
    (tmp_path / "robots.txt").write_text("User-agent: *\n")
    settings.WHITENOISE_ROOT = str(tmp_path)
    settings.WHITENOISE_AUTOREFRESH = False
    seen: list[int] = []

    async def view(request):
        seen.append(threading.get_ident())
        return HttpResponse("the page")

    middleware = StaticFilesMiddleware(view)
    assert iscoroutinefunction(middleware)
    factory = RequestFactory()

    static = await middleware(factory.get("/robots.txt"))
    assert static.status_code == 200
    assert b"".join(static.streaming_content) == b"User-agent: *\n"
    assert seen == []

    page = await middleware(factory.get("/traces/"))
    assert page.content == b"the page"
    assert seen == [threading.get_ident()]


def test_under_wsgi_it_is_whitenoises_middleware(tmp_path, settings):
    (tmp_path / "robots.txt").write_text("User-agent: *\n")
    settings.WHITENOISE_ROOT = str(tmp_path)
    middleware = StaticFilesMiddleware(lambda request: HttpResponse("the page"))
    assert not iscoroutinefunction(middleware)
    assert middleware(RequestFactory().get("/robots.txt")).status_code == 200
    assert middleware(RequestFactory().get("/traces/")).content == b"the page"
