"""The live trace WebSocket, ``ws://HOST/ws/<session_id>``: every action of PROTOCOL.md.

A thin Channels consumer: it checks who connects, parses client messages, registers the socket
with the process's hub (``traces.live.hub``) for its session, the traces it subscribes to and the
feed, and answers. What the socket sends goes through its ``Outbox`` (``traces.live.delivery``), whose
writer task keeps the socket's delivery state and makes delivery lossless by ``seq``. Stored
events reach it through the hub, not through a channel layer, so the consumer has no channel.

A socket gets the extension event types of its session's live stream only if its URL asks for
the full protocol (``?protocol=2``); clients of the original protocol get its event types only.
Answers to extension actions (``subscribe_trace`` of another session's trace, ``replay_trace``)
are the full protocol on any socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import connection, connections
from django.utils import timezone

from agents.config import allowed_models, model_label
from agents.events import format_timestamp, utcnow
from traces import access, protocol
from traces.access import SessionKey
from traces.compat import DirectDispatch, SendBuffer
from traces.live.delivery import Outbox
from traces.live.replay import replay
from traces.live.sessions import sockets
from traces.metrics import CONNECTIONS, MESSAGES_IN, REJECTED
from traces.models import Event, Trace
from traces.protocol import Action, ClientMessage, CloseCode, ErrorCode, ProtocolError, ServerEvent
from traces.proxies import scope_client
from traces.runtime import Runtime, get_runtime
from traces.security import Credential, Standing, socket_user
from traces.store.pool import pooled

logger = logging.getLogger(__name__)

FLOOD_STRIKES = 3  # close after this many seconds' worth of refused messages in a row
STALE_AFTER = dt.timedelta(hours=1)
FINISHING_SECONDS = 5.0  # how long start_agent waits for a finished run to tidy up


class RateLimiter:
    """A token bucket: ``rate`` messages per second, bursts up to ``rate``."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.tokens = float(rate)
        self.updated = time.monotonic()
        self.refused_in_a_row = 0

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.refused_in_a_row = 0
            return True
        self.refused_in_a_row += 1
        return False

    @property
    def flooding(self) -> bool:
        return self.refused_in_a_row > self.rate * FLOOD_STRIKES


@dataclass(frozen=True)
class ActiveTrace:
    id: uuid.UUID
    last_seq: int
    owner_id: int | None


@functools.cache
def _active_trace_sql(alias: str, with_owner: bool) -> str:
    """``Trace.objects.running().filter(session.filter(), started_at__gte=…)``, newest first, as SQL
    built once: every start_agent asks it, and compiling the queryset cost more than running it."""
    quote = connections[alias].ops.quote_name
    meta = Trace._meta

    def column(name: str) -> str:
        field = meta.get_field(name)
        return quote(getattr(field, "column", None) or name)

    sql = (
        f"SELECT {column('id')}, {column('last_seq')}, {column('owner')} FROM {quote(meta.db_table)} "
        f"WHERE {column('session_id')} = %s AND {column('status')} = %s AND {column('started_at')} >= %s"
    )
    if with_owner:
        sql += f" AND {column('owner')} = %s"
    return f"{sql} ORDER BY {column('started_at')} DESC LIMIT 1"


@pooled
def _active_trace(session: SessionKey) -> ActiveTrace | None:
    """The session's running trace, if any."""
    # A run older than STALE_AFTER without finishing died with its process; it does not block the session.
    since = connection.ops.adapt_datetimefield_value(timezone.now() - STALE_AFTER)
    params: list[Any] = [session.session_id, Trace.Status.RUNNING, since]
    if session.owner_id is not None:
        params.append(session.owner_id)
    with connection.cursor() as cursor:
        cursor.execute(_active_trace_sql(connection.alias, session.owner_id is not None), params)
        row = cursor.fetchone()
    if row is None:
        return None
    trace_id = row[0] if isinstance(row[0], uuid.UUID) else uuid.UUID(str(row[0]))
    return ActiveTrace(trace_id, row[1], row[2])


@pooled
def _finished(trace_id: uuid.UUID) -> bool:
    return Trace.objects.finished().filter(pk=trace_id).exists()


@pooled
def _trace(trace_id: uuid.UUID) -> Trace | None:
    return Trace.objects.filter(pk=trace_id).only("id", "owner_id", "session_id", "status", "last_seq").first()


@pooled
def _events_after(
    trace_id: uuid.UUID, after_seq: int, up_to: int | None = None, limit: int = 500
) -> list[tuple[int, Any, str, str]]:
    events = Event.objects.filter(trace_id=trace_id, seq__gt=after_seq)
    if up_to is not None:
        events = events.filter(seq__lte=up_to)
    return list(events.order_by("seq").values_list("seq", "timestamp", "event_type", "envelope")[:limit])


class TraceConsumer(DirectDispatch, AsyncWebsocketConsumer):
    # Stored events come through the hub: the consumer needs no channel-layer channel of its own.
    channel_layer_alias = "tracesite.no-layer"

    session_id: str = ""
    user: Any = None
    outbox: Outbox | None = None
    counted = False  # open and counted in ``sockets``; stopped once, by disconnect() or __call__
    closing_flood = False  # closing for flooding: what else it sends is counted, not answered or logged
    closing_revoked = False  # closing because its credential was revoked
    credential: Credential | None = None
    runtime: Runtime
    protocol_version = protocol.ORIGINAL_PROTOCOL  # ?protocol=2 on the URL asks for the full protocol
    _send_text: Callable[[str], None] | None = None  # under daphne, frames straight to the socket

    # ------------------------------------------------------------------ connection

    async def connect(self) -> None:
        self.session_id = self.scope["url_route"]["kwargs"]["session_id"]
        if not protocol.SESSION_ID_RE.fullmatch(self.session_id):
            REJECTED.labels("invalid_session").inc()
            await self._refuse(CloseCode.INVALID_SESSION)
            return
        self.user, self.credential = await socket_user(self.scope)
        if settings.TRACE_REQUIRE_AUTH and self.user is None:
            REJECTED.labels("unauthorized").inc()
            await self._refuse(CloseCode.UNAUTHORIZED)
            return
        self.owner_id = access.user_id(self.user)
        if self.owner_id is not None and sockets.users[self.owner_id] >= settings.TRACE_MAX_SOCKETS_PER_USER:
            REJECTED.labels("too_many_sockets").inc()
            logger.warning("websocket refused: user=%s has too many open sockets", self.owner_id)
            reason = f"too many open sockets for this user (at most {settings.TRACE_MAX_SOCKETS_PER_USER})"
            await self._refuse(CloseCode.TOO_MANY_SOCKETS, reason)
            return
        self.session = SessionKey.of(self.session_id, self.owner_id)
        self.protocol_version = protocol.requested_protocol(self.scope.get("query_string", b""))
        self.limiter = RateLimiter(settings.TRACE_RATE_LIMIT)
        self.replays: dict[str, asyncio.Task] = {}
        await self.accept()
        send_buffer = SendBuffer(self.base_send)
        self._send_text = send_buffer.text_sender()
        self.outbox = Outbox(
            self._send_frame,
            _events_after,
            self.session_id,
            self.user,
            send_buffer,
            close=self._close,
            session_events=protocol.streamed_events(self.protocol_version),
        )
        self.runtime = get_runtime()
        self.hub = self.runtime.hub
        self.hub.join_session(self.session.group, self.outbox)  # live events queue from now on
        sockets.connections += 1
        sockets.sessions[self.session_id] += 1
        if self.owner_id is not None:
            sockets.users[self.owner_id] += 1
        CONNECTIONS.inc()
        self.counted = True
        if self.credential is not None:
            self.runtime.credentials.add(self, self.credential)
        logger.info(
            "websocket opened session=%s user=%s protocol=%s client=%s",
            self.session_id,
            self.owner_id,
            self.protocol_version,
            scope_client(self.scope),
        )
        active = await _active_trace(self.session)
        active_trace_id, last_seq = (str(active.id), active.last_seq) if active else (None, 0)
        hello = self._message(
            ServerEvent.CONNECTION_ESTABLISHED,
            {
                "status": "connected",
                "session_id": self.session_id,
                "active_trace_id": active_trace_id,
                "last_seq": last_seq,
                "server_version": protocol.SERVER_VERSION,
                "protocol": self.protocol_version,
                "model": model_label(),
                "user": self.user.get_username() if self.user is not None else None,
            },
        )
        # A reconnect mid-run: that trace's live events wait until the client says where to resume
        # (subscribe_trace + after_seq), so it gets them in order, or until the hold runs out.
        self.outbox.start(hello, hold=(active_trace_id, last_seq) if active_trace_id else None)

    async def _send_frame(self, text: str) -> None:
        if self._send_text is not None:
            self._send_text(text)  # daphne: straight to the socket's protocol (traces.compat)
        else:
            await self.send(text_data=text)

    def revoke(self) -> None:
        """Its token was revoked, its session ended (or was ended by a password change) or its user
        deactivated: closed with 4001."""
        if self.closing_revoked:
            return
        self.closing_revoked = True
        REJECTED.labels("unauthorized").inc()
        logger.info(
            "websocket closed: its credential is no longer valid session=%s user=%s", self.session_id, self.owner_id
        )
        assert self.outbox is not None
        self.outbox.close_after(CloseCode.UNAUTHORIZED)

    def stand(self, standing: Standing) -> None:
        """Its user's rights as they are now: a user made staff, or no longer, sees accordingly."""
        if self.user is not None and self.user.is_staff != standing.is_staff:
            logger.info("websocket user's staff status changed session=%s user=%s", self.session_id, self.owner_id)
            self.user.is_staff = standing.is_staff

    async def _close(self, code: int) -> None:
        await self.close(code=code)

    async def _refuse(self, code: int, reason: str | None = None) -> None:
        # Accept, then close: a close during the handshake reaches clients as HTTP 403, losing the code.
        await self.accept()
        await self.close(code=code, reason=reason)

    async def disconnect(self, code: int) -> None:
        if await self._stop():
            logger.info("websocket closed session=%s code=%s", self.session_id, code)

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # The consumer ended without a websocket.disconnect (a handler raised, or the server
            # cancelled it): its tasks must not outlive it.
            if self.counted:
                logger.info("websocket ended without a disconnect session=%s", self.session_id)
            await asyncio.shield(self._stop())

    async def _stop(self) -> bool:
        """Stop this socket's work and count it closed; True only the first time."""
        if not self.counted:
            return False
        self.counted = False
        sockets.connections -= 1
        sockets.sessions[self.session_id] -= 1
        if sockets.sessions[self.session_id] <= 0:
            del sockets.sessions[self.session_id]
        if self.owner_id is not None:
            sockets.users[self.owner_id] -= 1
            if sockets.users[self.owner_id] <= 0:
                del sockets.users[self.owner_id]
        CONNECTIONS.dec()
        self.runtime.credentials.remove(self)
        assert self.outbox is not None
        self.hub.remove(self.outbox)
        tasks = list(self.replays.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.outbox.aclose()
        self.outbox.abandon()
        return True

    # ------------------------------------------------------------------ client messages

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing_flood:
            REJECTED.labels("rate_limited").inc()  # counted; it was logged once when the close began
            return
        if not self.limiter.allow():
            REJECTED.labels("rate_limited").inc()
            if self.limiter.flooding:
                self.closing_flood = True
                logger.warning("closing a flooding socket session=%s", self.session_id)
                assert self.outbox is not None
                self.outbox.close_after(CloseCode.FLOODING)
                return
            self.send_error(ErrorCode.RATE_LIMITED, f"more than {self.limiter.rate} messages per second")
            return
        try:
            message = protocol.parse_client_message(text_data, bytes_data)
        except ProtocolError as exc:
            REJECTED.labels("invalid").inc()
            self.send_error(exc.error, exc.detail)
            return
        MESSAGES_IN.labels(str(message.action)).inc()
        # Whatever this socket asks for is asked with its credential as it is now.
        if (
            self.credential is not None
            and message.action != Action.PING
            and not await self.runtime.credentials.check(self, self.credential)
        ):
            return
        try:
            await getattr(self, f"action_{message.action}")(message)
        except ProtocolError as exc:
            REJECTED.labels(str(exc.error)).inc()
            self.send_error(exc.error, exc.detail, **exc.extra)

    async def action_start_agent(self, message: ClientMessage) -> None:
        runs = self.runtime.runs
        handle = runs.get(self.session)
        if handle is not None and await _finished(handle.trace_id):
            # Its trace_completed is stored, and the client may have seen it already: the run is
            # only tidying up. A new question right after it is not a second agent.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FINISHING_SECONDS):
                    await handle.done.wait()
            handle = runs.get(self.session)
        if handle is not None or await _active_trace(self.session) is not None:
            raise ProtocolError(
                "an agent is already running in this session; cancel it or wait for it to finish", ErrorCode.AGENT_BUSY
            )
        if runs.full:
            retry_after = runs.retry_after()
            raise ProtocolError(
                f"the server is running {runs.running} agents and {len(runs.waiting)} more are waiting, its limit; "
                f"try again in {retry_after} s",
                ErrorCode.SERVER_BUSY,
                retry_after=retry_after,
            )
        fields = message.fields
        if fields["model"] is not None and fields["model"] not in allowed_models():
            # The model is the operator's to choose: a client may only pick among those allowed.
            raise ProtocolError(f"'model' must be one of: {', '.join(allowed_models())}")
        if fields["rerun_of"] is not None:
            await self._require_visible(fields["rerun_of"])
        handle = runs.start(
            fields["question"],
            session=self.session,
            owner_id=self.owner_id,
            model=fields["model"],
            max_steps=fields["max_steps"],
            source=Trace.Source.WEBSOCKET,
            rerun_of=fields["rerun_of"],
        )
        assert self.outbox is not None
        self.outbox.follow_new(str(handle.trace_id))

    async def action_cancel_agent(self, message: ClientMessage) -> None:
        active = await _active_trace(self.session)
        if active is not None and not access.can_cancel(self.user, active.owner_id):
            raise ProtocolError("this session's run belongs to another user", ErrorCode.FORBIDDEN)
        if self.runtime.runs.cancel_local(self.session):
            return
        if active is None:
            raise ProtocolError("no agent is running in this session", ErrorCode.NOT_FOUND)
        await self.runtime.bus.cancel(self.session)  # running in another process

    async def action_subscribe_trace(self, message: ClientMessage) -> None:
        trace_id = message.fields["trace_id"]
        trace = await self._require_visible(trace_id)
        assert self.outbox is not None
        # Follow first, then resume from the database: live events that arrive meanwhile queue
        # behind the resume and are deduplicated by seq. No gap, no duplicate.
        self.hub.follow_trace(str(trace_id), self.outbox)
        # A resume of this session's own run is its live stream, in the protocol this socket asked for.
        of_session = SessionKey.of(trace.session_id, trace.owner_id) == self.session
        self.outbox.resume(str(trace_id), message.fields["after_seq"], of_session=of_session)

    async def action_unsubscribe_trace(self, message: ClientMessage) -> None:
        key = str(message.fields["trace_id"])
        replay_task = self.replays.pop(key, None)
        if replay_task is not None:
            replay_task.cancel()
        assert self.outbox is not None
        self.hub.unfollow_trace(key, self.outbox)
        self.outbox.unfollow(key)

    async def action_subscribe_all(self, message: ClientMessage) -> None:
        assert self.outbox is not None
        self.hub.join_feed(self.outbox)

    async def action_replay_trace(self, message: ClientMessage) -> None:
        trace_id, speed = message.fields["trace_id"], message.fields["speed"]
        trace = await self._require_visible(trace_id)
        key = str(trace_id)
        previous = self.replays.pop(key, None)
        if previous is not None:
            previous.cancel()
        assert self.outbox is not None
        task = asyncio.get_running_loop().create_task(
            replay(self.outbox, _events_after, trace_id, speed, trace.last_seq)
        )
        self.replays[key] = task
        task.add_done_callback(lambda done: self.replays.pop(key, None) if self.replays.get(key) is done else None)

    async def action_ping(self, message: ClientMessage) -> None:
        self.send_event(
            ServerEvent.PONG, {"client_time": message.fields["client_time"], "server_time": format_timestamp(utcnow())}
        )

    # ------------------------------------------------------------------ helpers

    async def _require_visible(self, trace_id: uuid.UUID) -> Trace:
        trace = await _trace(trace_id)
        # Another user's trace is not found either: the answer does not say whether it exists.
        if trace is None or not access.can_view(self.user, trace.owner_id):
            raise ProtocolError(f"no trace {trace_id}", ErrorCode.NOT_FOUND)
        return trace

    def _message(self, event_type: ServerEvent, data: dict[str, Any]) -> str:
        return protocol.dumps(protocol.envelope(event_type, data, session_id=self.session_id))

    def send_event(self, event_type: ServerEvent, data: dict[str, Any]) -> None:
        assert self.outbox is not None
        self.outbox.text(self._message(event_type, data), event_type)

    def send_error(self, error: ErrorCode, detail: str, **extra: Any) -> None:
        self.send_event(ServerEvent.ERROR, {"error": str(error), "detail": detail, **extra})


class UnknownPath(AsyncWebsocketConsumer):
    """Any other WebSocket path (``/ws/a/b``, ``/``, ``/ws/../admin``): accepted and closed with 4400
    and a reason, logged at INFO; without it the router raises and the server answers 500."""

    channel_layer_alias = "tracesite.no-layer"

    async def connect(self) -> None:
        REJECTED.labels("unknown_path").inc()
        logger.info("websocket refused: no endpoint at %r", self.scope.get("path", ""))
        await self.accept()
        await self.close(code=CloseCode.INVALID_SESSION, reason="no such endpoint: connect to /ws/<session_id>")
