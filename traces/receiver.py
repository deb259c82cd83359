"""``POST /v1/traces``: OTLP/HTTP trace exports from other agents, recorded by ``traces.ingest.ingestor``.

Answers as OTLP/HTTP says: 200 with an ``ExportTraceServiceResponse`` in the request's encoding
(``partial_success`` counting the spans that were not taken, and why), 400 for a body that is
not a trace export, 401 without a valid API token (``Authorization: Bearer ts_…``; the token's
user owns the traces), 413 above ``TRACE_OTLP_MAX_BODY_BYTES`` (announced, received or
decompressed), 415 for other content types or encodings, and 503 with ``Retry-After`` while the
history cannot be written (exporters retry it; spans are idempotent).

The endpoint is an ASGI application in front of Django's (``tracesite/asgi.py``), as the
WebSocket consumers are, not a Django view: an export needs none of the pages' middleware
(sessions, CSRF, CSP, messages), and Django would run each middleware hook in a worker thread.
A request stays on the event loop except for its database queries (the token, the traces it
names), which run on the database pool's threads, and the decoding of a large body, which runs
in the decoder process (``traces.ingest.decoding``).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from traces.ingest import otlp
from traces.ingest.ingestor import ExportConflict
from traces.metrics import OTLP_REQUESTS, OTLP_SPANS
from traces.models import ApiToken
from traces.proxies import scope_client
from traces.runtime import get_runtime
from traces.store.event_store import HistoryUnavailable
from traces.store.pool import pooled

logger = logging.getLogger(__name__)

PATH = "/v1/traces"
TEXT = "text/plain; charset=utf-8"


class Answer:
    """A response: status, content type, body and any further headers."""

    def __init__(self, status: int, kind: str, body: bytes, **headers: str) -> None:
        self.status, self.kind, self.body, self.headers = status, kind, body, headers


class OtlpEndpoint:
    """ASGI: ``/v1/traces`` answered here; every other request goes on to ``app`` (Django)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") != PATH:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        try:
            answer = await _export(scope, headers, receive)
        except _Disconnected:
            return  # the client went away while sending: nobody to answer
        except Exception:  # a bug: answered as Django would, and logged
            logger.exception("otlp export failed")
            answer = Answer(500, TEXT, b"server error\n")
        OTLP_REQUESTS.labels(str(answer.status)).inc()
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [
                    (b"content-type", answer.kind.encode()),
                    (b"content-length", str(len(answer.body)).encode()),
                    *((name.lower().encode(), value.encode()) for name, value in answer.headers.items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer.body})


class _Disconnected(Exception):
    pass


def _headers(scope: dict) -> dict[str, str]:
    """The request's headers by lower-case name (the last of repeated ones)."""
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers") or []}


def _bearer(headers: dict[str, str]) -> str:
    scheme, _, key = headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


def _allowed_host(headers: dict[str, str]) -> bool:
    """``ALLOWED_HOSTS``, checked as Django checks it for its views."""
    host = headers.get("host", "")
    if settings.USE_X_FORWARDED_HOST and headers.get("x-forwarded-host"):
        host = headers["x-forwarded-host"]
    domain, _ = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)


async def _export(scope: dict, headers: dict[str, str], receive: Any) -> Answer:
    limit = settings.TRACE_OTLP_MAX_BODY_BYTES
    too_large = f"the body is larger than {limit:,} bytes\n".encode()
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return Answer(413, TEXT, too_large)  # refused before a byte of it is read
    if not _allowed_host(headers):
        return Answer(400, TEXT, b"the Host header is not one of ALLOWED_HOSTS\n")
    if scope.get("method") != "POST":
        return Answer(405, TEXT, b"POST OTLP trace exports here\n", Allow="POST")
    try:
        kind = otlp.content_type(headers.get("content-type", ""))
    except otlp.OtlpError as exc:
        return Answer(exc.status, TEXT, f"{exc}\n".encode())
    user = await pooled(ApiToken.authenticate)(_bearer(headers))
    if user is None:
        logger.info("otlp export refused: no valid API token client=%s", scope_client(scope))
        body = otlp.error_body(kind, "a valid API token is needed: Authorization: Bearer ts_…")
        return Answer(401, kind, body, **{"WWW-Authenticate": 'Bearer realm="tracesite"'})
    received = await _body(receive, limit)
    if received is None:
        return Answer(413, TEXT, too_large)
    runtime = get_runtime()
    try:
        spans = await runtime.decoder.decode(received, headers.get("content-encoding", ""), kind)
    except otlp.OtlpError as exc:
        return Answer(exc.status, kind, otlp.error_body(kind, str(exc)))
    dropped = max(0, len(spans) - settings.TRACE_OTLP_MAX_SPANS)
    spans = spans[: settings.TRACE_OTLP_MAX_SPANS]
    try:
        rejected, reason = await runtime.ingestor.ingest(spans, user.pk)
    except ExportConflict as exc:
        logger.info("otlp export not stored (the exporter will retry): %s", exc)
        return Answer(503, kind, otlp.error_body(kind, str(exc)), **{"Retry-After": "1"})
    except HistoryUnavailable as exc:
        logger.warning("otlp export not stored (the exporter will retry): %s", exc)
        body = otlp.error_body(kind, "the trace history is unavailable; retry later")
        return Answer(503, kind, body, **{"Retry-After": "5"})
    OTLP_SPANS.labels("stored").inc(len(spans) - rejected)
    OTLP_SPANS.labels("rejected").inc(rejected + dropped)
    if dropped:
        reason = "; ".join(
            filter(None, [f"{dropped} span(s) over the limit of {settings.TRACE_OTLP_MAX_SPANS} a request", reason])
        )
    return Answer(200, kind, otlp.answer(kind, rejected + dropped, reason))


async def _body(receive: Any, limit: int) -> bytes | None:
    """The request's body as it arrives, or None as soon as it passes ``limit`` bytes (the rest
    is not read: a server that streams bodies, like uvicorn, stops taking them)."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)
