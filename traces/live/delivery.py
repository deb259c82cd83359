"""One socket's outgoing side: its outbox, the writer task that empties it, and its view of each trace.

Everything a socket sends goes through its ``Outbox``, in order: the hello, answers, stored events
the hub hands it, backfills from the database, replays. One writer task per socket sends them,
so a slow client slows only itself, and the socket's delivery state (``FollowedTrace``) is only
ever touched by that task.

Lossless by ``seq``: the writer remembers the last seq it sent per trace, drops duplicates and
backfills a gap from the database (events are stored before they are delivered, so it has them).
When the outbox is full (the client reads slower than events come) live events of a trace are not
queued but noted, and the writer reads them from the database once it has caught up: memory stays
bounded and nothing is lost. A client whose connection stops taking data for
``TRACE_SLOW_CLIENT_SECONDS`` is dropped; it resumes by seq when it reconnects.

What a socket is shown of a trace is the view's ``shown`` event types: of its session's live
stream, those of the protocol it asked for (``Outbox.session_events``); of a trace it subscribed
to elsewhere, all of them. An event it is not shown still moves the view's position, so it leaves
no gap for the writer to fill from the database: each is checked once, by its type, as it passes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from agents.events import EventType
from traces import access
from traces.compat import SendBuffer
from traces.metrics import MESSAGES_OUT, REJECTED
from traces.protocol import TRACE_EVENTS, CloseCode
from traces.store.event_store import StoredEvent

logger = logging.getLogger(__name__)

HOLD_SECONDS = 2.0
CATCH_UP_SECONDS = 5.0  # a followed trace quiet this long is checked against the database
MAX_QUEUED = 2000  # items an outbox holds before live events are read from the database instead
BACKFILL_CHUNK = 500
CLOSE_GRACE_SECONDS = 1.0
_abandoned: set[asyncio.Task] = set()  # closed sockets whose unsent bytes get a last chance to drain
_TRACE_EVENTS_OUT = MESSAGES_OUT.labels("trace_event")  # every event sent: its counter looked up once

# Reads a trace's stored events (trace id, after seq, up to seq or None, at most):
# rows of (seq, timestamp, event_type, envelope).
Reader = Callable[[uuid.UUID, int, int | None, int], Awaitable[list[tuple[int, Any, str, str]]]]


@dataclass
class FollowedTrace:
    """A socket's view of one trace it follows."""

    shown: frozenset[str]  # the event types this socket is sent of this trace
    sent: int = 0  # the last seq sent on this socket, or passed over as not shown
    held: list[StoredEvent] | None = None  # live events waiting for the client to say where to resume
    skipped: int | None = None  # stored before this socket followed it unasked: a late resume may still ask
    last_sent: float = 0.0  # monotonic time of the last event sent or passed over; 0 while none was
    finished: bool = False  # its trace_completed was sent


@dataclass(eq=False)  # one outbox per socket, compared and hashed by identity
class Outbox:
    """A socket's outgoing queue and its writer. ``send`` puts one text frame on the socket."""

    send: Callable[[str], Awaitable[None]]
    read_events: Reader
    session_id: str
    user: Any = None
    send_buffer: SendBuffer = field(default_factory=lambda: SendBuffer(None))
    close: Callable[[int], Awaitable[None]] | None = None  # closes the socket with a code
    session_events: frozenset[str] = TRACE_EVENTS  # the event types of its session's live stream it is sent
    followed: dict[str, FollowedTrace] = field(default_factory=dict)
    dropped: bool = False  # the client is gone or too slow: send nothing more

    def __post_init__(self) -> None:
        # What the writer task does next, in order: a call of one of its methods, with its arguments.
        self._items: collections.deque[tuple[Any, ...]] = collections.deque()
        self._wake = asyncio.Event()
        self._overflowed: set[str] = set()
        self._timers: set[asyncio.Task] = set()
        self._writer: asyncio.Task | None = None
        self._abandoned = False
        self._buffer_limit = settings.TRACE_SEND_BUFFER_BYTES
        self.replay_bytes = 0  # bytes of replayed events queued and not yet sent
        self._replay_room = asyncio.Event()
        self._replay_room.set()

    # ------------------------------------------------------------------ the queue (any task)

    def start(self, hello: str, hold: tuple[str, int] | None = None) -> None:
        """Send ``hello`` first, then what has queued meanwhile. ``hold``: a running trace of the
        session (id, last stored seq) whose live events wait for the client's resume."""
        if hold is not None:
            trace_id, last_seq = hold
            self.followed[trace_id] = FollowedTrace(self.session_events, sent=last_seq, held=[])
            self._later(HOLD_SECONDS, (self._release, trace_id))
        self._items.appendleft((self._send, hello, "connection_established"))
        self._writer = asyncio.get_running_loop().create_task(self._write(), name=f"outbox-{self.session_id}")
        self._wake.set()

    def _put(self, item: tuple[Any, ...]) -> None:
        self._items.append(item)
        self._wake.set()

    def text(self, text: str, label: str) -> None:
        self._put((self._send, text, label))

    def replayed(self, text: str) -> None:
        """A replayed event, counted against the replay's share of the outbox (``room_for_replay``)."""
        self.replay_bytes += len(text)
        if self.replay_bytes >= self._buffer_limit:
            self._replay_room.clear()
        self._put((self._send_replayed, text))

    async def room_for_replay(self) -> bool:
        """Wait until the replayed events queued here are under the send buffer's limit
        (TRACE_SEND_BUFFER_BYTES): a replay goes at the client's pace, so a client that does not
        read holds that much here and that much in the send buffer. False if the socket is dropped."""
        while not self._replay_room.is_set() and not self.dropped:
            try:
                async with asyncio.timeout(0.5):  # a drop sets nothing: look again now and then
                    await self._replay_room.wait()
            except TimeoutError:
                pass
        return not self.dropped

    def offer(self, event: StoredEvent) -> None:
        """A stored event of a trace or session this socket follows (from the hub)."""
        if len(self._items) >= MAX_QUEUED:
            self._overflowed.add(event.trace_id)  # read from the database once the writer catches up
            self._wake.set()
            return
        self._put((self._live, event))

    def offer_feed(self, event: StoredEvent) -> None:
        if len(self._items) < MAX_QUEUED:
            self._put((self._feed, event))

    def resume(self, trace_id: str, after_seq: int, *, of_session: bool) -> None:
        """subscribe_trace. A trace of this socket's own session is its session's live stream, in the
        protocol the socket asked for; any other trace is sent whole."""
        self._put((self._resume, trace_id, after_seq, self.session_events if of_session else TRACE_EVENTS))

    def unfollow(self, trace_id: str) -> None:
        self._put((self._unfollow, trace_id))

    def follow_new(self, trace_id: str) -> None:
        """A trace this socket started (in its session): follow it from its first event."""
        self._put((self._follow_new, trace_id))

    def catch_up(self) -> None:
        self._put((self._catch_up_quiet,))

    def close_after(self, code: int) -> None:
        """Close the socket once what is queued before has been sent."""
        self._put((self._close_socket, code))

    @property
    def queued(self) -> int:
        return len(self._items)

    def _later(self, seconds: float, item: tuple[Any, ...]) -> None:
        async def wait() -> None:
            await asyncio.sleep(seconds)
            self._put(item)

        task = asyncio.get_running_loop().create_task(wait())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    async def aclose(self) -> None:
        tasks = [t for t in (self._writer, *self._timers) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def tasks(self) -> list[asyncio.Task]:
        return [t for t in (self._writer, *self._timers) if t is not None and not t.done()]

    # ------------------------------------------------------------------ the writer (its own task)

    async def _write(self) -> None:
        """The socket's writer: what is queued, in order, until the socket closes. If a step fails
        (a backfill whose database read fails, a bug), the socket is closed with 1011: a writer that
        ended silently would leave its client connected and waiting for ever, while a client that
        sees the close reconnects and resumes by seq."""
        items = self._items
        try:
            while True:
                while not items:
                    if self._overflowed:
                        await self._catch_up_overflowed()
                        continue
                    self._wake.clear()
                    await self._wake.wait()
                call, *arguments = items.popleft()
                await call(*arguments)
        except asyncio.CancelledError:
            raise
        except Exception:  # whatever it was, the client is told by the close
            logger.exception("sending to a socket failed session=%s: closing it (1011)", self.session_id)
            if self.close is not None and not self.dropped:
                self.dropped = True
                await self.close(CloseCode.SERVER_ERROR)

    async def _live(self, event: StoredEvent) -> None:
        key, seq = event.trace_id, event.seq
        followed = self.followed.get(key)
        if followed is None:
            if seq > 1:
                # A trace of this session that was under way before this socket followed it
                # (publishing runs a little behind storing, so even one already finished in the
                # database): the client may be about to resume it by seq, so hold it as the hello does.
                self.followed[key] = FollowedTrace(self.session_events, sent=seq - 1, held=[event])
                self._later(HOLD_SECONDS, (self._release, key))
                return
            # Started after this socket joined its session: follow it.
            followed = self.followed[key] = FollowedTrace(self.session_events)
        if followed.held is not None:
            followed.held.append(event)
            return
        if seq <= followed.sent:
            return  # sent already (a backfill, or the same event through another route)
        if seq > followed.sent + 1:
            await self._backfill(key, followed, up_to=seq - 1)
        if seq == followed.sent + 1:
            await self._next_event(followed, seq, event.event_type, event.text)

    async def _unfollow(self, trace_id: str) -> None:
        self.followed.pop(trace_id, None)

    async def _follow_new(self, trace_id: str) -> None:
        self.followed.setdefault(trace_id, FollowedTrace(self.session_events))

    async def _close_socket(self, code: int) -> None:
        if self.close is not None and not self.dropped:
            self.dropped = True
            await self.close(code)

    async def _feed(self, event: StoredEvent) -> None:
        if event.trace_id in self.followed:
            return  # followed already: it comes as a live event
        if access.can_view(self.user, event.owner_id):
            await self._send(event.text, "trace_event")

    async def _resume(self, key: str, after_seq: int, shown: frozenset[str]) -> None:
        """subscribe_trace: the stored events after ``after_seq``, then live ones; no gap, no duplicate."""
        followed = self.followed.get(key)
        held = followed.held if followed is not None else None
        if followed is not None and held is None:
            if followed.skipped is not None and after_seq < followed.skipped:
                # The hold ran out before the client asked (a busy server): the events this socket
                # skipped come now, after the live ones it has sent meanwhile. Each seq still once.
                await self._send_range(key, after_seq, followed.skipped, shown)
            after_seq = max(after_seq, followed.sent)  # never resend on the same socket
        followed = self.followed[key] = FollowedTrace(shown, sent=after_seq)
        await self._backfill(key, followed)
        for event in held or []:
            await self._live(event)

    async def _release(self, key: str) -> None:
        """The client did not ask to resume the trace that was running when it connected: follow it."""
        followed = self.followed.get(key)
        if followed is None or followed.held is None:
            return
        held, followed.held = followed.held, None
        followed.skipped = followed.sent  # a late subscribe_trace can still ask for these
        for event in held:
            await self._live(event)

    async def _catch_up_quiet(self) -> None:
        """A safety net: a followed trace quiet for CATCH_UP_SECONDS without finishing gets what the
        database holds after its last sent seq (a batch another process published may be lost)."""
        quiet = time.monotonic() - CATCH_UP_SECONDS
        for key, followed in list(self.followed.items()):
            if followed.held is None and not followed.finished and 0 < followed.last_sent <= quiet:
                followed.last_sent = time.monotonic()  # checked now; again after another quiet spell
                await self._backfill(key, followed)

    async def _catch_up_overflowed(self) -> None:
        keys, self._overflowed = self._overflowed, set()
        for key in keys:
            followed = self.followed.get(key)
            if followed is not None and followed.held is None:
                await self._backfill(key, followed)

    async def _backfill(self, key: str, followed: FollowedTrace, up_to: int | None = None) -> None:
        """Send the stored events after the last sent one, up to ``up_to`` (or all)."""
        trace_id = uuid.UUID(key)
        while not self.dropped:
            rows = await self.read_events(trace_id, followed.sent, up_to, BACKFILL_CHUNK)
            for seq, _, event_type, text in rows:
                await self._next_event(followed, seq, event_type, text)
            if len(rows) < BACKFILL_CHUNK:
                return

    async def _send_range(self, key: str, after_seq: int, up_to: int, shown: frozenset[str]) -> None:
        """Send stored events ``after_seq < seq <= up_to`` of the ``shown`` types without moving the live position."""
        trace_id = uuid.UUID(key)
        while after_seq < up_to and not self.dropped:
            rows = await self.read_events(trace_id, after_seq, up_to, BACKFILL_CHUNK)
            for seq, _, event_type, text in rows:
                after_seq = seq
                if event_type in shown:
                    await self._send(text, "trace_event")
            if len(rows) < BACKFILL_CHUNK:
                return

    async def _send_replayed(self, text: str) -> None:
        self.replay_bytes -= len(text)
        if self.replay_bytes < self._buffer_limit // 2:
            self._replay_room.set()
        await self._send(text, "trace_event")

    async def _next_event(self, followed: FollowedTrace, seq: int, event_type: str, text: str) -> None:
        """The next event of a followed trace: sent if the socket is shown its type, passed over if not."""
        followed.sent = seq
        if event_type == EventType.TRACE_COMPLETED:
            followed.finished = True
        else:
            followed.last_sent = time.monotonic()
        if event_type in followed.shown:
            await self._send(text, "trace_event")

    async def _send(self, text: str, label: str) -> None:
        (_TRACE_EVENTS_OUT if label == "trace_event" else MESSAGES_OUT.labels(label)).inc()
        if self.dropped:
            return
        try:
            await self.send(text)
        except Exception as exc:  # noqa: BLE001 - each server has its own "connection closed" error
            # The client went away while this socket still had events to send (daphne raises
            # autobahn's Disconnected, others an OSError). Its websocket.disconnect follows.
            logger.debug("send on a closed socket session=%s: %r", self.session_id, exc)
            self.dropped = True
            return
        pending = self.send_buffer.pending()
        if pending is not None and pending > self._buffer_limit:
            await self._wait_for_client()

    def abandon(self) -> None:
        """The socket is closed (the client closed it): what is still in the server's send buffer
        goes nowhere useful. Twisted closes the TCP connection only once that buffer is written,
        and a client that stopped reading while it closed never takes it, so its close handshake
        hangs (10 s in a websockets client) and so does its reconnect. Give the buffer
        CLOSE_GRACE_SECONDS to drain, then drop the connection."""
        self.dropped = True
        if self._abandoned or not self.send_buffer.pending():
            return
        self._abandoned = True

        async def drop_if_stuck() -> None:
            deadline = time.monotonic() + CLOSE_GRACE_SECONDS
            while self.send_buffer.pending() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.send_buffer.pending():
                self.send_buffer.abort()

        task = asyncio.get_running_loop().create_task(drop_if_stuck())
        _abandoned.add(task)
        task.add_done_callback(_abandoned.discard)

    async def _wait_for_client(self) -> None:
        """Backpressure: more than TRACE_SEND_BUFFER_BYTES wait for this client. Let it catch up
        (to half of that) within TRACE_SLOW_CLIENT_SECONDS, or drop it rather than buffer its
        events without bound. Only this socket waits; its outbox stops queuing live events and
        reads them from the database later. A reconnect resumes by seq; a run it started goes on.
        """
        deadline = time.monotonic() + settings.TRACE_SLOW_CLIENT_SECONDS
        while (pending := self.send_buffer.pending() or 0) > settings.TRACE_SEND_BUFFER_BYTES // 2:
            if self.send_buffer.closing:  # it closed without reading what we sent: not slow, gone
                self.abandon()
                return
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
