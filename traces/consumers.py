"""The live trace WebSocket, ``ws://HOST/ws/<session_id>``: every action of PROTOCOL.md.

Delivery is lossless by ``seq``: the socket remembers the last seq it sent per trace, drops
duplicates, and backfills any gap from the database (events are stored before they are
published, so the database always has them).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Coroutine
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from agents.config import model_label
from agents.events import EventType, format_timestamp, utcnow
from traces import access, protocol
from traces.access import SessionKey
from traces.compat import DirectDispatch, SendBuffer
from traces.db import live_read
from traces.layer import BestEffortLayer
from traces.live import live_runs, sockets
from traces.metrics import CONNECTIONS, MESSAGES_IN, MESSAGES_OUT, REJECTED
from traces.models import Event, Trace
from traces.protocol import ClientMessage, CloseCode, ErrorCode, ProtocolError, ServerEvent
from traces.security import socket_user

logger = logging.getLogger(__name__)

FLOOD_STRIKES = 3  # close after this many seconds' worth of refused messages in a row
BACKFILL_CHUNK = 500
STALE_AFTER = dt.timedelta(hours=1)
HOLD_SECONDS = 2.0
CATCH_UP_SECONDS = 5.0
FINISHING_SECONDS = 5.0  # how long start_agent waits for a finished run to tidy up
COMPLETED_PREFIX = f'{{"event_type":"{EventType.TRACE_COMPLETED}"'  # how a stored trace_completed envelope begins


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


@live_read
def _active_trace(session: SessionKey) -> Trace | None:
    """The session's running trace, if any."""
    # A run older than STALE_AFTER without finishing died with its process; it does not block the session.
    traces = Trace.objects.running().filter(session.filter(), started_at__gte=timezone.now() - STALE_AFTER)
    return traces.order_by("-started_at").only("id", "last_seq", "owner_id").first()


@live_read
def _finished(trace_id: uuid.UUID) -> bool:
    return Trace.objects.finished().filter(pk=trace_id).exists()


@live_read
def _trace(trace_id: uuid.UUID) -> Trace | None:
    return Trace.objects.filter(pk=trace_id).only("id", "owner_id", "status", "last_seq").first()


@live_read
def _events_after(
    trace_id: uuid.UUID, after_seq: int, up_to: int | None = None, limit: int = BACKFILL_CHUNK
) -> list[tuple[int, Any, str]]:
    events = Event.objects.filter(trace_id=trace_id, seq__gt=after_seq)
    if up_to is not None:
        events = events.filter(seq__lte=up_to)
    return list(events.order_by("seq").values_list("seq", "timestamp", "envelope")[:limit])


_leaving: set[asyncio.Task] = set()  # group discards of consumers that ended without a disconnect


class TraceConsumer(DirectDispatch, AsyncWebsocketConsumer):
    session_id: str = ""
    user: Any = None
    dropped = False  # the client is gone or too slow: send nothing more
    counted = False  # open and counted in ``sockets``; stopped once, by disconnect() or __call__
    send_buffer = SendBuffer(None)

    # ------------------------------------------------------------------ connection

    async def connect(self) -> None:
        self.session_id = self.scope["url_route"]["kwargs"]["session_id"]
        if not protocol.SESSION_ID_RE.fullmatch(self.session_id):
            REJECTED.labels("invalid_session").inc()
            await self._refuse(CloseCode.INVALID_SESSION)
            return
        self.user = await socket_user(self.scope)
        if settings.TRACE_REQUIRE_AUTH and self.user is None:
            REJECTED.labels("unauthorized").inc()
            await self._refuse(CloseCode.UNAUTHORIZED)
            return
        self.owner_id = access.user_id(self.user)
        self.session = SessionKey.of(self.session_id, self.owner_id)
        layer = BestEffortLayer.wrap(self.channel_layer)
        if layer is None:
            raise ImproperlyConfigured("the live socket needs a channel layer (CHANNEL_LAYERS)")
        self.layer: BestEffortLayer = layer
        self.limiter = RateLimiter(settings.TRACE_RATE_LIMIT)
        self.delivered: dict[str, int] = {}  # trace id -> last seq sent
        self.subscribed: set[str] = set()
        self.feed = False
        self.replays: dict[str, asyncio.Task] = {}
        self.background: set[asyncio.Task] = set()  # short-lived helpers, cancelled with the socket
        self.held: dict[str, list[dict]] = {}
        self.skipped: dict[str, int] = {}  # trace id -> last seq stored before this socket followed it unasked
        self.groups_joined = [self.session.group]
        await self.layer.group_add(
            self.session.group, self.channel_name
        )  # best effort: history, resume and replay need no layer
        await self.accept()
        self.send_buffer = SendBuffer(self.base_send)
        self.dropped = False
        self.watching: dict[str, float] = {}  # unfinished followed traces -> when their last event was sent
        self.refresher = asyncio.create_task(self._refresh_groups())
        self.catcher = asyncio.create_task(self._catch_up_later())
        sockets.connections += 1
        sockets.sessions[self.session_id] += 1
        CONNECTIONS.inc()
        self.counted = True
        logger.info("websocket opened session=%s user=%s", self.session_id, self.owner_id)
        active = await _active_trace(self.session)
        active_trace_id, last_seq = (str(active.pk), active.last_seq) if active else (None, 0)
        if active_trace_id:
            # A reconnect mid-run: hold that trace's live events until the client says where to
            # resume (subscribe_trace + after_seq), so it gets them in order, or until HOLD_SECONDS.
            self.delivered[active_trace_id] = last_seq
            self.held[active_trace_id] = []
            self._spawn(self._release_later(active_trace_id))
        await self.send_event(
            ServerEvent.CONNECTION_ESTABLISHED,
            {
                "status": "connected",
                "session_id": self.session_id,
                "active_trace_id": active_trace_id,
                "last_seq": last_seq,
                "server_version": protocol.SERVER_VERSION,
                "model": model_label(),
                "user": self.user.get_username() if self.user is not None else None,
            },
        )

    async def _refuse(self, code: int) -> None:
        # Accept, then close: a close during the handshake reaches clients as HTTP 403, losing the code.
        await self.accept()
        await self.close(code=code)

    async def disconnect(self, code: int) -> None:
        if not self._stop():
            return  # refused before accept, or already stopped
        await self._leave_groups()
        logger.info("websocket closed session=%s code=%s", self.session_id, code)

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Its channel is not read again: the layer need not keep what still arrives for it.
            layer = BestEffortLayer.wrap(self.channel_layer)
            if layer is not None and getattr(self, "channel_name", None):
                layer.forget_channel(self.channel_name)
            if self._stop():
                # The consumer ended without a websocket.disconnect (a handler raised, or the
                # server cancelled it): its background tasks must not outlive it.
                logger.info("websocket ended without a disconnect session=%s", self.session_id)
                task = asyncio.get_running_loop().create_task(self._leave_groups())
                _leaving.add(task)
                task.add_done_callback(_leaving.discard)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def _stop(self) -> bool:
        """Stop this socket's background work and count it closed; True only the first time."""
        if not self.counted:
            return False
        self.counted = False
        for task in (self.refresher, self.catcher, *self.replays.values(), *self.background):
            task.cancel()
        sockets.connections -= 1
        sockets.sessions[self.session_id] -= 1
        if sockets.sessions[self.session_id] <= 0:
            del sockets.sessions[self.session_id]
        CONNECTIONS.dec()
        return True

    async def _leave_groups(self) -> None:
        for group in self.groups_joined:
            await self.layer.group_discard(group, self.channel_name)  # if the layer is down, memberships expire

    # ------------------------------------------------------------------ client messages

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.limiter.allow():
            REJECTED.labels("rate_limited").inc()
            if self.limiter.flooding:
                logger.warning("closing a flooding socket session=%s", self.session_id)
                await self.close(code=CloseCode.FLOODING)
                return
            await self.send_error(ErrorCode.RATE_LIMITED, f"more than {self.limiter.rate} messages per second")
            return
        try:
            message = protocol.parse_client_message(text_data, bytes_data)
        except ProtocolError as exc:
            REJECTED.labels("invalid").inc()
            await self.send_error(exc.error, exc.detail)
            return
        MESSAGES_IN.labels(str(message.action)).inc()
        try:
            await getattr(self, f"action_{message.action}")(message)
        except ProtocolError as exc:
            REJECTED.labels(str(exc.error)).inc()
            await self.send_error(exc.error, exc.detail)

    async def action_start_agent(self, message: ClientMessage) -> None:
        runs = live_runs()
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
        if len(runs) >= settings.TRACE_MAX_CONCURRENT_RUNS:
            raise ProtocolError(
                f"the server is running {len(runs)} agents, its limit; try again shortly", ErrorCode.SERVER_BUSY
            )
        fields = message.fields
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
        self.delivered.setdefault(str(handle.trace_id), 0)

    async def action_cancel_agent(self, message: ClientMessage) -> None:
        active = await _active_trace(self.session)
        if active is not None and not access.can_cancel(self.user, active.owner_id):
            raise ProtocolError("this session's run belongs to another user", ErrorCode.FORBIDDEN)
        if live_runs().cancel_local(self.session):
            return
        if active is None:
            raise ProtocolError("no agent is running in this session", ErrorCode.NOT_FOUND)
        # Running in another process: its cancel listener is in the session's control group.
        await self.layer.group_send(self.session.control_group, {"type": protocol.AGENT_CANCEL_MESSAGE})

    async def action_subscribe_trace(self, message: ClientMessage) -> None:
        trace_id = message.fields["trace_id"]
        await self._require_visible(trace_id)
        key = str(trace_id)
        # Join first, then read the backlog: live events that arrive meanwhile wait in this
        # socket's channel and are deduplicated by seq afterwards. No gap, no duplicate.
        if key not in self.subscribed:
            group = protocol.trace_group(trace_id)
            await self.layer.group_add(group, self.channel_name)
            self.groups_joined.append(group)
            self.subscribed.add(key)
        after_seq = message.fields["after_seq"]
        held = self.held.pop(key, None)
        skipped = self.skipped.pop(key, None)
        if key in self.delivered and held is None:
            if skipped is not None and after_seq < skipped:
                # The hold ran out before the client asked (a busy server): the events this socket
                # skipped come now, after the live ones it has sent meanwhile. Each seq still once.
                await self._send_range(key, after_seq, skipped)
            after_seq = max(after_seq, self.delivered[key])  # never resend on the same socket
        self.delivered[key] = after_seq
        await self._backfill(key, None)
        for pending in held or []:
            await self.trace_event(pending)

    async def action_unsubscribe_trace(self, message: ClientMessage) -> None:
        key = str(message.fields["trace_id"])
        replay = self.replays.pop(key, None)
        if replay is not None:
            replay.cancel()
        if key in self.subscribed:
            group = protocol.trace_group(key)
            await self.layer.group_discard(group, self.channel_name)
            self.groups_joined.remove(group)
            self.subscribed.discard(key)
            self.delivered.pop(key, None)
            self.watching.pop(key, None)
            self.skipped.pop(key, None)

    async def action_subscribe_all(self, message: ClientMessage) -> None:
        if not self.feed:
            await self.layer.group_add(protocol.ALL_TRACES_GROUP, self.channel_name)
            self.groups_joined.append(protocol.ALL_TRACES_GROUP)
            self.feed = True

    async def action_replay_trace(self, message: ClientMessage) -> None:
        trace_id, speed = message.fields["trace_id"], message.fields["speed"]
        await self._require_visible(trace_id)
        key = str(trace_id)
        previous = self.replays.pop(key, None)
        if previous is not None:
            previous.cancel()
        self.replays[key] = asyncio.create_task(self._replay(key, speed))

    async def action_ping(self, message: ClientMessage) -> None:
        await self.send_event(
            ServerEvent.PONG, {"client_time": message.fields["client_time"], "server_time": format_timestamp(utcnow())}
        )

    # ------------------------------------------------------------------ channel-layer messages

    async def trace_event(self, message: dict[str, Any]) -> None:
        """An event of a trace this socket follows (its session's, or subscribed)."""
        key, seq = message["trace_id"], message["seq"]
        if key in self.held:
            self.held[key].append(message)
            return
        last = self.delivered.get(key)
        if last is None:
            self.delivered[key] = last = seq - 1
            if seq > 1:
                # A trace of this session that was under way before this socket joined (publishing
                # runs a little behind storing, so even one already finished in the database): the
                # client may be about to resume it by seq, so hold it as connect() does.
                self.held[key] = [message]
                self._spawn(self._release_later(key))
                return
            # Otherwise a trace started in this session after this socket joined: follow it.
        if seq <= last:
            return  # already sent (backlog, or the same event through another group)
        if seq > last + 1:
            await self._backfill(key, seq - 1)  # the layer dropped something: the database has it
        if seq == self.delivered[key] + 1:
            self.delivered[key] = seq
            self._sent(key, message["text"])
            await self._send_text(message["text"], event_type=None)

    async def held_release(self, message: dict[str, Any]) -> None:
        """The client did not ask to resume the trace that was running when it connected: follow it."""
        key = message["trace_id"]
        if key not in self.held:
            return
        self.skipped[key] = self.delivered[key]  # a late subscribe_trace can still ask for these
        for pending in self.held.pop(key):
            await self.trace_event(pending)

    async def _refresh_groups(self) -> None:
        """Re-join groups now and then: a restarted Redis has forgotten them, and they expire."""
        while True:
            await asyncio.sleep(settings.TRACE_GROUP_REFRESH)
            for group in list(self.groups_joined):
                if not await self.layer.group_add(group, self.channel_name):
                    break  # the layer is down: all of them again next time

    def _sent(self, key: str, text: str) -> None:
        if text.startswith(COMPLETED_PREFIX):
            self.watching.pop(key, None)
        else:
            self.watching[key] = time.monotonic()

    async def _catch_up_later(self) -> None:
        """A safety net for live events the channel layer dropped (it drops silently when a channel
        is over capacity): a followed trace that has been quiet for CATCH_UP_SECONDS without
        finishing gets whatever the database holds after its last delivered seq. Asked through
        the layer, so it runs in order with everything else this socket handles."""
        while True:
            await asyncio.sleep(CATCH_UP_SECONDS)
            quiet = time.monotonic() - CATCH_UP_SECONDS
            if any(at <= quiet for at in self.watching.values()):
                # If the layer is down nothing arrives through it either: the next round tries again.
                await self.layer.send(self.channel_name, {"type": "trace.catch_up"})

    async def trace_catch_up(self, message: dict[str, Any]) -> None:
        quiet = time.monotonic() - CATCH_UP_SECONDS
        for key in [key for key, at in self.watching.items() if at <= quiet and key not in self.held]:
            self.watching[key] = time.monotonic()  # checked now; again after another quiet spell
            await self._backfill(key, None)

    async def _release_later(self, key: str) -> None:
        await asyncio.sleep(HOLD_SECONDS)
        # Through the layer, so it is handled in order with everything else; here if the layer is down.
        if key in self.held and not await self.layer.send(self.channel_name, {"type": "held.release", "trace_id": key}):
            await self.held_release({"trace_id": key})

    async def trace_feed(self, message: dict[str, Any]) -> None:
        """trace_started / trace_completed of any trace, for subscribe_all."""
        if message["trace_id"] in self.delivered:
            return  # followed already: it arrives through trace_event
        if not access.can_view(self.user, message.get("owner_id")):
            return
        await self._send_text(message["text"], event_type=None)

    # ------------------------------------------------------------------ helpers

    async def _require_visible(self, trace_id: uuid.UUID) -> Trace:
        trace = await _trace(trace_id)
        if trace is None:
            raise ProtocolError(f"no trace {trace_id}", ErrorCode.NOT_FOUND)
        if not access.can_view(self.user, trace.owner_id):
            raise ProtocolError(f"trace {trace_id} belongs to another user", ErrorCode.FORBIDDEN)
        return trace

    async def _backfill(self, key: str, up_to: int | None) -> None:
        """Send stored events after the last delivered one, up to ``up_to`` (or all)."""
        while True:
            rows = await _events_after(uuid.UUID(key), self.delivered[key], up_to)
            for seq, _, text in rows:
                self.delivered[key] = seq
                self._sent(key, text)
                await self._send_text(text, event_type=None)
            if len(rows) < BACKFILL_CHUNK:
                return

    async def _send_range(self, key: str, after_seq: int, up_to: int) -> None:
        """Send stored events ``after_seq < seq <= up_to`` without moving the live position."""
        while after_seq < up_to:
            rows = await _events_after(uuid.UUID(key), after_seq, up_to)
            for seq, _, text in rows:
                after_seq = seq
                await self._send_text(text, event_type=None)
            if len(rows) < BACKFILL_CHUNK:
                return

    async def _replay(self, key: str, speed: float) -> None:
        trace_id = uuid.UUID(key)
        rows: list[tuple[int, Any, str]] = []
        while True:
            chunk = await _events_after(trace_id, rows[-1][0] if rows else 0, limit=5000)
            rows.extend(chunk)
            if len(chunk) < 5000:
                break
        info = {"trace_id": key, "speed": speed, "events": len(rows)}
        await self.send_event(ServerEvent.REPLAY_STARTED, info)
        started = time.monotonic()
        first = rows[0][1] if rows else None
        for _, timestamp, text in rows:
            if speed > 0 and first is not None:
                due = (timestamp - first).total_seconds() / speed
                delay = due - (time.monotonic() - started)
                if delay > 0:
                    await asyncio.sleep(delay)
            await self._send_text(protocol.mark_replay(text), event_type=None)
        await self.send_event(ServerEvent.REPLAY_COMPLETED, info)
        self.replays.pop(key, None)

    async def send_event(self, event_type: ServerEvent, data: dict[str, Any]) -> None:
        await self._send_text(
            protocol.dumps(protocol.envelope(event_type, data, session_id=self.session_id)), event_type
        )

    async def send_error(self, error: ErrorCode, detail: str) -> None:
        await self.send_event(ServerEvent.ERROR, {"error": str(error), "detail": detail})

    async def _send_text(self, text: str, event_type: ServerEvent | None) -> None:
        MESSAGES_OUT.labels(str(event_type) if event_type else "trace_event").inc()
        if self.dropped:
            return
        try:
            await self.send(text_data=text)
        except Exception as exc:  # noqa: BLE001 - each server has its own "connection closed" error
            # The client went away while this socket still had events to send (daphne raises
            # autobahn's Disconnected, others an OSError). Its websocket.disconnect follows.
            logger.debug("send on a closed socket session=%s: %r", self.session_id, exc)
            self.dropped = True
            return
        pending = self.send_buffer.pending()
        if pending is not None and pending > settings.TRACE_SEND_BUFFER_BYTES:
            await self._wait_for_client()

    async def _wait_for_client(self) -> None:
        """Backpressure: more than TRACE_SEND_BUFFER_BYTES wait for this client. Let it catch up
        (to half of that) within TRACE_SLOW_CLIENT_SECONDS, or drop it rather than buffer its
        events without bound. Only this socket waits; its missed live events are stored, and a
        reconnect resumes by seq (``subscribe_trace`` + ``after_seq``). A run it started goes on.
        """
        deadline = time.monotonic() + settings.TRACE_SLOW_CLIENT_SECONDS
        while (pending := self.send_buffer.pending() or 0) > settings.TRACE_SEND_BUFFER_BYTES // 2:
            if time.monotonic() > deadline:
                REJECTED.labels("slow_client").inc()
                logger.warning(
                    "dropping a slow client session=%s: %d bytes unsent after %ss",
                    self.session_id,
                    pending,
                    settings.TRACE_SLOW_CLIENT_SECONDS,
                )
                self.dropped = True
                self.send_buffer.abort()
                return
            await asyncio.sleep(0.02)
