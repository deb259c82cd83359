"""Every place where tracesite reaches into a library's internals, and a check that each still finds
what it reaches for.

- ``SendBuffer`` reads how many bytes daphne's Twisted transport holds for a client (ASGI has no
  way to ask), so that a client that stops reading is noticed and dropped; and it has autobahn
  close a connection that breaks a limit with a close frame (1009 for a message over 1 MiB)
  instead of dropping it.
- ``InMemoryChannelLayer`` sweeps the in-memory layer's expiry at most once a second.
- ``RedisChannelLayer`` drops channels-redis's receive buffers of closed sockets' channels.
- ``DirectDispatch`` skips the connection clean-up Channels runs before every message handler.
- ``SendBuffer.text_sender`` sends a socket's frames straight to autobahn under daphne, and
  ``plain_autobahn_debug_lines`` stops autobahn formatting debug lines it does not print.
- ``on_server_start`` and ``on_server_shutdown`` hook the process's runtime into daphne's
  Twisted reactor, since daphne sends no ASGI lifespan events.

A library upgrade can silently switch a hook off (the transport is not found; a private attribute
is renamed). ``check()`` looks for each of them and ``warn_if_broken()`` (run at start-up) logs
a warning naming the hook, the library and what it no longer finds.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from channels.consumer import AsyncConsumer, get_handler_name
from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer
from channels_redis.core import RedisChannelLayer as ChannelsRedisChannelLayer

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- daphne's send buffer


def _socket_transport(protocol: Any) -> Any | None:
    """The Twisted TCP transport under a protocol (daphne's HTTP channel wraps it once)."""
    from twisted.internet.abstract import FileDescriptor

    transport = getattr(protocol, "transport", None)
    for _ in range(4):
        if transport is None or isinstance(transport, FileDescriptor):
            return transport
        transport = getattr(transport, "transport", None)
    return None


def _daphne_protocol(send: Any) -> Any | None:
    """daphne passes each application ``partial(server.handle_reply, protocol)`` as ``send``;
    Channels' session middleware wraps it (``InstanceSessionWrapper.real_send``)."""
    for _ in range(6):  # a few layers of wrapping at most
        if isinstance(send, functools.partial):
            return send.args[0] if send.args else None
        owner = getattr(send, "__self__", None)
        send = getattr(owner, "real_send", None)
        if send is None:
            return None
    return None


def _is_daphne(protocol: Any) -> bool:
    return type(protocol).__module__.startswith("daphne.")


class SendBuffer:
    """Bytes a socket holds for its client, under daphne. Elsewhere (uvicorn makes ``send`` wait for
    the socket, so a slow client slows only its own consumer) ``pending()`` is None: the check is off."""

    warned = False

    def __init__(self, send: Any) -> None:
        protocol = _daphne_protocol(send)
        self.transport = _socket_transport(protocol) if protocol is not None else None
        self.protocol = protocol if protocol is not None and _is_daphne(protocol) else None
        if protocol is not None and _is_daphne(protocol) and hasattr(protocol, "failByDrop"):
            # autobahn drops the TCP connection of a client that breaks a limit (a message over
            # daphne's 1 MiB): the client sees 1006 and no reason. Close with a close frame instead,
            # so it gets 1009 "message too big".
            protocol.failByDrop = False
        if self.transport is None and protocol is not None and _is_daphne(protocol) and not SendBuffer.warned:
            SendBuffer.warned = True
            logger.warning(
                "slow-client protection is off: no Twisted transport found behind daphne's send (%s); "
                "a newer daphne or Twisted may have moved it",
                type(protocol).__name__,
            )

    @property
    def available(self) -> bool:
        return self.transport is not None

    def text_sender(self) -> Callable[[str], None] | None:
        """Under daphne, a text frame straight to autobahn, as daphne sends a ``websocket.send``
        (``WebSocketProtocol.serverSend``), without the consumer's, the session middleware's and
        daphne's layers of ``send`` above it: a fifth of a frame's cost. None elsewhere.

        Sending on a closed socket raises autobahn's ``Disconnected``, as through daphne."""
        protocol = self.protocol
        if protocol is None or not callable(getattr(protocol, "sendMessage", None)):
            return None
        send_message = protocol.sendMessage

        def send_text(text: str) -> None:
            send_message(text.encode())

        return send_text

    def pending(self) -> int | None:
        """Bytes written to the socket's transport and not yet taken by the kernel."""
        t = self.transport
        if t is None:
            return None
        return len(t.dataBuffer) - t.offset + getattr(t, "_tempDataLen", 0)

    @property
    def closing(self) -> bool:
        """The client has closed (autobahn answered its close frame and asked Twisted to close once the
        buffer is written): nothing more need be sent."""
        return self.transport is not None and bool(getattr(self.transport, "disconnecting", False))

    def abort(self) -> None:
        """Drop the connection now, freeing its buffer (a close frame would wait behind it)."""
        if self.transport is not None:
            self.transport.abortConnection()


# ---------------------------------------------------------------------------- channel layers


class InMemoryChannelLayer(ChannelsInMemoryChannelLayer):
    """Channels' in-memory layer, sweeping expired messages and memberships at most once a second.

    The stock layer walks every channel and every group membership on each ``receive`` and
    ``group_send``, so each live event cost time in proportion to the open sockets. Messages and
    memberships now expire within a second of their expiry instead of exactly at it.
    """

    SWEEP_INTERVAL = 1.0
    _swept = 0.0
    crosses_processes = False  # one process's memory: nothing to send to other processes

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._swept < self.SWEEP_INTERVAL:
            return
        self._swept = now
        super()._clean_expired()

    def forget_channel(self, channel: str) -> None:
        """The consumer of ``channel`` has ended (its leftover messages expire on their own)."""


class _ReceiveBuffers(dict):
    """channels-redis's per-channel receive buffers, refusing to keep one for a closed channel.

    channels-redis reads all of a process's messages from one Redis list and files each under its
    channel in a buffer. A message for a socket that has just closed (an event published before
    its groups were left) is filed under a channel nobody will read again, and stays: about 30 KiB
    per reconnect in the soak. Closed channels are remembered for ``REMEMBER_SECONDS``, far longer
    than a message lives in Redis (the layer's expiry), and their messages are dropped.
    """

    REMEMBER_SECONDS = 600.0

    def __init__(self, factory: Callable[[], Any]) -> None:
        super().__init__()
        self.factory = factory
        self.closed: dict[str, float] = {}  # channel -> when it closed, oldest first

    def __missing__(self, channel: str) -> Any:
        queue = self.factory()
        if channel not in self.closed:
            self[channel] = queue
        return queue  # a closed channel's message goes into a queue that is thrown away

    def __delitem__(self, channel: str) -> None:
        # channels-redis deletes a channel's buffer when a receive on it ends, and when one is
        # cancelled. A consumer that is cancelled itself can close its channel before its
        # receive task has finished being cancelled: that buffer is gone already, and a
        # KeyError there would replace the CancelledError and skip releasing the receive lock.
        self.pop(channel, None)

    def close(self, channel: str) -> None:
        self.pop(channel, None)
        now = time.monotonic()
        self.closed[channel] = now
        for name, at in list(self.closed.items()):  # insertion order: oldest first
            if now - at < self.REMEMBER_SECONDS:
                break
            del self.closed[name]


class RedisChannelLayer(ChannelsRedisChannelLayer):
    """channels-redis, without the receive buffers of closed sockets' channels."""

    crosses_processes = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        buffers = getattr(self, "receive_buffer", None)
        if isinstance(buffers, defaultdict) and buffers.default_factory is not None:
            self.receive_buffer = _ReceiveBuffers(buffers.default_factory)

    def forget_channel(self, channel: str) -> None:
        """The consumer of ``channel`` has ended: drop what is buffered for it and what comes later."""
        buffers = self.receive_buffer
        if isinstance(buffers, _ReceiveBuffers):
            buffers.close(channel)


# ---------------------------------------------------------------------------- Channels' dispatch


class DirectDispatch:
    """Channels' ``AsyncConsumer.dispatch`` without its ``aclose_old_connections()``.

    That clean-up is a hop to the database thread before every message handler, per socket: it
    cost more than the rest of delivering a live event. The consumer's database reads run on
    ``traces.store.pool``'s reader threads (or ``database_sync_to_async``), which manage their connections.
    """

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)


# ---------------------------------------------------------------------------- daphne's start and shutdown


def on_server_start(start: Callable[[], None]) -> bool:
    """Have daphne call ``start`` once its reactor runs (daphne sends no ASGI lifespan events):
    Twisted's ``callWhenRunning``, on the asyncio loop the reactor runs on. False when not under
    daphne (uvicorn sends lifespan events instead)."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or not hasattr(reactor, "callWhenRunning"):
        return False
    reactor.callWhenRunning(start)
    return True


def on_server_shutdown(drain: Callable[[], Awaitable[None]]) -> bool:
    """Have daphne wait for ``drain`` before it stops (SIGTERM, SIGINT): Twisted runs "before
    shutdown" triggers and waits for the Deferreds they return, as daphne does to cancel its
    application instances. False when not under daphne (uvicorn uses the ASGI lifespan instead)."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or not hasattr(reactor, "addSystemEventTrigger"):
        return False
    from twisted.internet import defer

    def trigger() -> Any:
        return defer.Deferred.fromFuture(asyncio.ensure_future(drain()))

    reactor.addSystemEventTrigger("before", "shutdown", trigger)
    return True


# ---------------------------------------------------------------------------- autobahn's debug lines


def _as_is(value: Any, *args: Any, **kwargs: Any) -> Any:
    return value


def plain_autobahn_debug_lines() -> bool:
    """autobahn builds the arguments of a debug line on every frame it sends (a method's qualified
    name and values, coloured through click) whether or not debug lines are printed, on every
    frame. Its websocket module's ``hltype``/``hlval`` now pass the
    values as they are; the lines, when shown, lose their colours only."""
    try:
        from autobahn.websocket import protocol as websocket
    except ImportError:
        return False
    if not (callable(getattr(websocket, "hltype", None)) and callable(getattr(websocket, "hlval", None))):
        return False
    setattr(websocket, "hltype", _as_is)  # noqa: B010 - the library's own names, replaced
    setattr(websocket, "hlval", _as_is)  # noqa: B010
    return True


# ---------------------------------------------------------------------------- the self-check


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def _check_daphne() -> str | None:
    try:
        from daphne.server import Server
        from twisted.internet.abstract import FileDescriptor
        from twisted.internet.tcp import Connection
    except ImportError:
        return None  # not installed: nothing to hook
    if "partial(self.handle_reply" not in _source(Server):
        return "daphne: Server no longer passes partial(self.handle_reply, protocol) as send; SendBuffer finds nothing"
    from autobahn.websocket.protocol import WebSocketProtocol

    if "failByDrop" not in WebSocketProtocol.CONFIG_ATTRS_COMMON:
        return "autobahn: failByDrop is no longer a protocol option; an oversized message drops the connection"
    missing = [name for name in ("dataBuffer", "offset") if not hasattr(FileDescriptor, name)]
    if missing or not hasattr(Connection, "abortConnection"):
        return f"Twisted: the transport lacks {', '.join(missing) or 'abortConnection'}; SendBuffer cannot read it"
    from autobahn.websocket import protocol as websocket

    if not (hasattr(websocket, "hltype") and hasattr(websocket, "hlval")):
        return "autobahn: hltype/hlval are gone from autobahn.websocket.protocol; debug lines may cost again"
    if not callable(getattr(WebSocketProtocol, "sendMessage", None)):
        return "autobahn: WebSocketProtocol.sendMessage is gone; frames go through daphne's send"
    from channels.sessions import InstanceSessionWrapper

    if "self.real_send" not in _source(InstanceSessionWrapper):
        return (
            "channels: InstanceSessionWrapper.real_send is gone; SendBuffer cannot see through the session middleware"
        )
    return None


def _check_redis_layer() -> str | None:
    layer = ChannelsRedisChannelLayer()
    buffers = getattr(layer, "receive_buffer", None)
    if not isinstance(buffers, defaultdict) or buffers.default_factory is None:
        return (
            "channels-redis: RedisChannelLayer.receive_buffer is no longer a defaultdict; "
            "closed channels keep their messages"
        )
    return None


def _check_in_memory_layer() -> str | None:
    if not callable(getattr(ChannelsInMemoryChannelLayer, "_clean_expired", None)):
        return "channels: InMemoryChannelLayer._clean_expired is gone; its expiry sweep is no longer rate-limited"
    return None


def _check_dispatch() -> str | None:
    if "aclose_old_connections" not in _source(AsyncConsumer.dispatch):
        return (
            "channels: AsyncConsumer.dispatch no longer calls aclose_old_connections; "
            "DirectDispatch may be skipping something else"
        )
    return None


CHECKS: list[Callable[[], str | None]] = [_check_daphne, _check_redis_layer, _check_in_memory_layer, _check_dispatch]


def check() -> list[str]:
    """What each hook no longer finds in the installed libraries (empty when all is well)."""
    problems = []
    for probe in CHECKS:
        try:
            problem = probe()
        except Exception as exc:  # noqa: BLE001 - a probe that breaks is itself a finding
            problem = f"{probe.__name__} failed: {exc!r}"
        if problem:
            problems.append(problem)
    return problems


def warn_if_broken() -> list[str]:
    problems = check()
    for problem in problems:
        logger.warning("library hook out of date: %s", problem)
    return problems
