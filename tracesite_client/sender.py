"""The background sender: spans go onto a bounded queue and one daemon thread posts them.

The agent only ever appends to the queue, which never blocks and never raises: a full queue
drops the span (``dropped`` counts it). The thread takes what is queued (up to ``max_batch``
spans), posts it as gzipped OTLP/JSON with ``urllib`` (whose redirects it follows, but never with
its token to another origin) and retries with exponential backoff on
429, 502, 503, 504 and connection errors (honouring ``Retry-After``); a batch still refused after
``max_retries``, or refused for good (400, 401, 413…), counts in ``failed``, as do spans the
server answers it did not take. Trouble is logged once per outage, as a warning, and the return
to normal once. ``flush(timeout)`` waits for the queue to drain, ``close(timeout)`` flushes then
stops the thread; what is still queued after that is counted as failed, not sent.
"""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import random
import threading
import urllib.error
import urllib.request
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from tracesite_client.otlp import export_request

logger = logging.getLogger("tracesite_client")

VERSION = "0.1.0"
RETRYABLE = {429, 502, 503, 504}
MAX_BODY_BYTES = 8 * 1024 * 1024  # half the server's default TRACE_OTLP_MAX_BODY_BYTES


def endpoint(url: str) -> str:
    """``http://host:8000`` or ``http://host:8000/v1/traces`` → the traces endpoint."""
    url = url.rstrip("/")
    return url if url.endswith("/v1/traces") else url + "/v1/traces"


def resource(service: str, **extra: Any) -> dict[str, Any]:
    """The resource attributes of everything this package sends: ``tracesite.source = "sdk"``
    tells the server the trace came from here."""
    return {
        "service.name": service,
        "tracesite.source": "sdk",
        "telemetry.sdk.name": "tracesite_client",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": VERSION,
        **extra,
    }


class _TokenStaysHome(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, except that one to another origin (scheme, host and port) goes without
    the ``Authorization`` header: the token is for the tracesite server only, not for wherever a
    proxy or a misconfigured server sends the client."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        redirected = super().redirect_request(req, fp, code, msg, headers, newurl)
        if redirected is not None and _origin(redirected.full_url) != _origin(req.full_url):
            redirected.remove_header("Authorization")
        return redirected


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


class Sender:
    """One daemon thread posting OTLP/JSON spans to ``url`` (see the module docstring)."""

    def __init__(
        self,
        url: str,
        token: str,
        resource_attributes: dict[str, Any],
        *,
        max_queue: int = 4096,
        max_batch: int = 256,
        timeout: float = 10.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self.url = endpoint(url)
        self.resource = resource_attributes
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sent = 0  # spans the server stored
        self.dropped = 0  # spans never queued: the queue was full, or the sender closed
        self.failed = 0  # spans queued but not stored: refused, or still failing after the retries
        self._opener = urllib.request.build_opener(_TokenStaysHome)
        self._headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Authorization": f"Bearer {token}",
            "User-Agent": f"tracesite-client/{VERSION}",
        }
        self._queue: deque[dict[str, Any]] = deque()
        self._unfinished = 0  # queued plus in flight
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._closed = False
        self._troubled = False
        self._thread = threading.Thread(target=self._run, name="tracesite-sender", daemon=True)
        self._thread.start()

    def submit(self, span: dict[str, Any]) -> bool:
        """Queue ``span``; False (and counted in ``dropped``) when the queue is full or closed."""
        with self._cond:
            if self._closed or len(self._queue) >= self.max_queue:
                self.dropped += 1
                full = not self._closed
            else:
                self._queue.append(span)
                self._unfinished += 1
                self._cond.notify_all()
                return True
        if full:
            self._trouble(f"the queue is full ({self.max_queue} spans), spans are being dropped")
        return False

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything queued has been sent (or given up on); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._unfinished == 0, timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush for up to ``timeout`` seconds, then stop; True when everything was delivered."""
        drained = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._stopping.set()
            self._cond.notify_all()
        self._thread.join(1.0)
        return drained

    # The thread.

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    self.failed += len(self._queue)
                    self._unfinished -= len(self._queue)
                    self._queue.clear()
                    self._cond.notify_all()
                    return
                batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            try:
                self._deliver(batch)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any bad batch
                self.failed += len(batch)
                self._trouble(f"a batch could not be sent: {exc!r}")
            finally:
                with self._cond:
                    self._unfinished -= len(batch)
                    self._cond.notify_all()

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        raw = json.dumps(export_request(batch, self.resource, VERSION), ensure_ascii=False).encode()
        if len(raw) > MAX_BODY_BYTES and len(batch) > 1:
            half = len(batch) // 2
            self._deliver(batch[:half])
            self._deliver(batch[half:])
            return
        body = gzip.compress(raw, compresslevel=5)
        attempt = 0
        while True:
            status, answer, retry_after = self._post(body)
            if status == 200:
                rejected = _rejected(answer)
                self.sent += len(batch) - rejected
                self.failed += rejected
                if rejected:
                    self._trouble(f"the server did not take {rejected} span(s): {_message(answer)}")
                else:
                    self._recovered()
                return
            reason = f"HTTP {status}: {_message(answer)}" if status else answer.decode(errors="replace")
            if status and status not in RETRYABLE:
                self.failed += len(batch)
                self._trouble(f"the server refused {len(batch)} span(s) ({reason})")
                return
            attempt += 1
            if attempt > self.max_retries or self._stopping.is_set():
                self.failed += len(batch)
                self._trouble(f"{len(batch)} span(s) not delivered after {attempt} attempts ({reason})")
                return
            self._trouble(f"{reason}; retrying")
            delay = retry_after if retry_after is not None else self.backoff * 2 ** (attempt - 1)
            delay = min(self.max_backoff, delay) * random.uniform(0.8, 1.2)
            if self._stopping.wait(delay):
                self.failed += len(batch)
                return

    def _post(self, body: bytes) -> tuple[int, bytes, float | None]:
        """(status, body, Retry-After seconds); status 0 when the server was not reached."""
        request = urllib.request.Request(self.url, data=body, headers=self._headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.status, response.read(), None
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), _seconds(exc.headers.get("Retry-After"))
        except (OSError, http.client.HTTPException) as exc:  # URLError, refused, reset, timeout
            reason = getattr(exc, "reason", exc)
            return 0, f"cannot reach {self.url}: {reason}".encode(), None

    def _trouble(self, message: str) -> None:
        if not self._troubled:
            self._troubled = True
            logger.warning("tracesite: %s (the agent goes on; see .dropped and .failed)", message)
        else:
            logger.debug("tracesite: %s", message)

    def _recovered(self) -> None:
        if self._troubled:
            self._troubled = False
            logger.info("tracesite: spans are delivered to %s again", self.url)


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _answer(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _rejected(body: bytes) -> int:
    partial = _answer(body).get("partialSuccess") or {}
    try:
        return int(partial.get("rejectedSpans") or 0)
    except (TypeError, ValueError):
        return 0


def _message(body: bytes) -> str:
    document = _answer(body)
    found = document.get("message") or (document.get("partialSuccess") or {}).get("errorMessage")
    return str(found) if found else body[:200].decode(errors="replace")
