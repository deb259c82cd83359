"""``POST /v1/traces``: OTLP/HTTP trace exports from other agents, recorded by ``traces.ingest``.

Answers as OTLP/HTTP says: 200 with an ``ExportTraceServiceResponse`` in the request's encoding
(``partial_success`` counting the spans that were not taken, and why), 400 for a body that is
not a trace export, 401 without a valid API token (``Authorization: Bearer ts_…``; the token's
user owns the traces), 413 above ``TRACE_OTLP_MAX_BODY_BYTES`` (before or after decompression),
415 for other content types or encodings, and 503 with ``Retry-After`` while the history cannot
be written (exporters retry it; spans are idempotent).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from traces import otlp
from traces.db import live_read
from traces.ingest import get_ingestor
from traces.metrics import OTLP_REQUESTS, OTLP_SPANS
from traces.models import ApiToken
from traces.recorder import TraceStoreError

logger = logging.getLogger(__name__)


def _response(kind: str, body: bytes, status: int = 200) -> HttpResponse:
    OTLP_REQUESTS.labels(str(status)).inc()
    return HttpResponse(body, status=status, content_type=kind)


def _bearer(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


@csrf_exempt
@login_not_required
async def receive_traces(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        response = HttpResponse("POST OTLP trace exports here\n", status=405, content_type="text/plain")
        response["Allow"] = "POST"
        return response
    try:
        kind = otlp.content_type(request.headers.get("Content-Type", ""))
    except otlp.OtlpError as exc:
        OTLP_REQUESTS.labels(str(exc.status)).inc()
        return HttpResponse(f"{exc}\n", status=exc.status, content_type="text/plain")
    user = await live_read(ApiToken.authenticate)(_bearer(request))
    if user is None:
        response = _response(
            kind, otlp.error_body(kind, "a valid API token is needed: Authorization: Bearer ts_…"), 401
        )
        response["WWW-Authenticate"] = 'Bearer realm="tracesite"'
        return response
    limit = settings.TRACE_OTLP_MAX_BODY_BYTES
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    try:
        if declared > limit:
            raise otlp.OtlpError(413, f"the body is larger than {limit:,} bytes")
        body = request.read(limit + 1)
        if len(body) > limit:
            raise otlp.OtlpError(413, f"the body is larger than {limit:,} bytes")
        body = otlp.inflate(body, request.headers.get("Content-Encoding", ""), limit)
        export = otlp.parse(body, kind)
        spans = otlp.spans(export, settings.TRACE_OTLP_MAX_ATTRIBUTE_BYTES)
    except otlp.OtlpError as exc:
        return _response(kind, otlp.error_body(kind, str(exc)), exc.status)
    dropped = max(0, len(spans) - settings.TRACE_OTLP_MAX_SPANS)
    spans = spans[: settings.TRACE_OTLP_MAX_SPANS]
    try:
        rejected, reason = await get_ingestor().ingest(spans, user.pk)
    except TraceStoreError as exc:
        logger.warning("otlp export not stored (the exporter will retry): %s", exc)
        response = _response(kind, otlp.error_body(kind, "the trace history is unavailable; retry later"), 503)
        response["Retry-After"] = "5"
        return response
    OTLP_SPANS.labels("stored").inc(len(spans) - rejected)
    OTLP_SPANS.labels("rejected").inc(rejected + dropped)
    if dropped:
        reason = "; ".join(
            filter(None, [f"{dropped} span(s) over the limit of {settings.TRACE_OTLP_MAX_SPANS} a request", reason])
        )
    return _response(kind, otlp.answer(kind, rejected + dropped, reason))


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body for ``/v1/traces`` over ``TRACE_OTLP_MAX_BODY_BYTES`` is
    answered 413 as soon as its Content-Length says so, or as soon as that many bytes have come —
    before Django's ASGI handler, which spools a whole body to memory or disk before any view runs.
    """

    PATHS = ("/v1/traces",)

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.PATHS:
            await self.app(scope, receive, send)
            return
        limit = settings.TRACE_OTLP_MAX_BODY_BYTES
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await _refuse(send, limit)
            return
        received = 0
        started = False

        async def limited() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        async def watched(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, watched)
        except _TooLarge:
            if not started:
                await _refuse(send, limit)


async def _refuse(send: Any, limit: int) -> None:
    OTLP_REQUESTS.labels("413").inc()
    body = f"the body is larger than {limit:,} bytes\n".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
