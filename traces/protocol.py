"""The wire protocol (PROTOCOL.md): the envelope, server-only messages, protocol versions, client
actions, error and close codes, channel-layer names, and client-message validation.

The trace events inside envelopes are the agent's vocabulary (``agents.events``); this module
wraps them for the socket. It imports nothing from Django.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs

import orjson

from agents.events import SEED_EVENTS, EventType, format_timestamp, to_json, utcnow
from traces import __version__

SERVER_VERSION = __version__  # sent in connection_established and /health
MAX_MESSAGE_BYTES = 64 * 1024
MAX_QUESTION_CHARS = 4000
MAX_STEPS_LIMIT = 50
MAX_REPLAY_SPEED = 1000.0
SESSION_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")


class ServerEvent(StrEnum):
    """Messages of the live socket that are not trace events: never stored, no ``seq``."""

    CONNECTION_ESTABLISHED = "connection_established"
    REPLAY_STARTED = "replay_started"
    REPLAY_COMPLETED = "replay_completed"
    ERROR = "error"
    PONG = "pong"


MessageType = EventType | ServerEvent
# Every trace event carries trace_id and seq, and is stored.
TRACE_EVENTS = frozenset(EventType)

# ---------------------------------------------------------------------------- protocol versions

# The original MyAgent React component shows an event type it does not know as a raw JSON card,
# so a socket gets the extension event types of its session's live stream only when it asks for
# them with ``?protocol=2``. Without it, it gets the trace events the original server sent, with
# their seq as stored (gaps where the others were left out). Extension fields ride along either way.
ORIGINAL_PROTOCOL = 1
FULL_PROTOCOL = 2
ORIGINAL_TRACE_EVENTS: frozenset[EventType] = SEED_EVENTS | {EventType.RUN_COMPLETED}


def requested_protocol(query_string: bytes | str) -> int:
    """The protocol a socket asked for in its URL: ``?protocol=2`` (or later) is the full protocol,
    anything else, or nothing, the original one."""
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin1")
    asked = (parse_qs(query_string).get("protocol") or [""])[-1]
    try:
        version = int(asked)
    except ValueError:
        return ORIGINAL_PROTOCOL
    return FULL_PROTOCOL if version >= FULL_PROTOCOL else ORIGINAL_PROTOCOL


def streamed_events(version: int) -> frozenset[str]:
    """The trace events a socket of protocol ``version`` gets of its session's live stream."""
    return TRACE_EVENTS if version >= FULL_PROTOCOL else ORIGINAL_TRACE_EVENTS


class Action(StrEnum):
    START_AGENT = "start_agent"
    CANCEL_AGENT = "cancel_agent"
    SUBSCRIBE_TRACE = "subscribe_trace"
    UNSUBSCRIBE_TRACE = "unsubscribe_trace"
    SUBSCRIBE_ALL = "subscribe_all"
    REPLAY_TRACE = "replay_trace"
    PING = "ping"


class ErrorCode(StrEnum):
    INVALID_MESSAGE = "Invalid message format"
    RATE_LIMITED = "rate_limited"
    AGENT_BUSY = "agent_busy"
    SERVER_BUSY = "server_busy"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    INTERNAL = "internal_error"


class CloseCode:
    INVALID_SESSION = 4400  # a bad session id, or no endpoint at the path
    UNAUTHORIZED = 4001
    FLOODING = 4429
    TOO_MANY_SOCKETS = 4408  # the user holds TRACE_MAX_SOCKETS_PER_USER open sockets on this process
    SERVER_ERROR = 1011  # the server could not go on sending (a database read failed): reconnect and resume


def session_group(session_id: str, owner_id: int | None = None, *, namespaced: bool = False) -> str:
    """The name of a session's sockets, by which the hub routes its events (``traces.live.hub``). With
    auth (``namespaced``), sessions are per user: another user's same id is another session, and the
    traces nobody owns (``runagent`` without ``--user``) have a namespace of their own. A session id
    may hold dots, so the namespace comes first and cannot be spelled by one: ``u<digits>.`` for a
    user, ``a.`` for nobody; without auth every name is the bare id, shared by contract.
    ASCII, under 100 characters."""
    if not namespaced:
        name = session_id
    elif owner_id is None:
        name = f"a.{session_id}"
    else:
        name = f"u{int(owner_id)}.{session_id}"
    if len(name) <= 80:
        return f"session.{name}"
    # Hashed names start with "h", which no namespaced name does.
    return f"session.h{hashlib.sha256(name.encode()).hexdigest()[:40]}"


# ---------------------------------------------------------------------------- envelope


def trace_message_id(event_type: str, trace_hex: str, seq: int) -> str:
    """The message id of a trace event (``trace_hex``: its trace id's 32 hex digits): the same
    whenever the event is resumed or replayed."""
    return f"{event_type}_{trace_hex}_{seq}"


def envelope(
    event_type: MessageType,
    data: dict[str, Any],
    *,
    session_id: str,
    timestamp: dt.datetime | None = None,
    trace_id: uuid.UUID | str | None = None,
    seq: int | None = None,
    message_id: str | None = None,
    replay: bool = False,
) -> dict[str, Any]:
    """Build a server → client message. Trace events pass ``trace_id`` and ``seq``."""
    if seq is not None and trace_id is not None:
        message_id = message_id or trace_message_id(event_type, uuid.UUID(str(trace_id)).hex, seq)
    message: dict[str, Any] = {
        "event_type": str(event_type),
        "timestamp": format_timestamp(timestamp or utcnow()),
        "message_id": message_id or f"{event_type}_{uuid.uuid4().hex[:12]}",
        "session_id": session_id,
        "data": data,
    }
    if trace_id is not None:
        message["trace_id"] = str(trace_id)
    if seq is not None:
        message["seq"] = seq
        message["replay"] = replay
    return message


def nested_deeper(value: Any, levels: int) -> bool:
    """Whether a parsed JSON ``value`` has lists or objects nested more than ``levels`` deep. It
    recurses no deeper than that: a check for documents from outside (an import, an attribute)
    before code that recurses over them meets Python's limit."""
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list):
        return False
    return levels == 0 or any(nested_deeper(item, levels - 1) for item in value)


def dumps(message: Any) -> str:
    """Serialise once; the same text is stored and sent to every subscriber."""
    return to_json(message)


def loads(text: str | bytes) -> Any:
    return orjson.loads(text)


def mark_replay(text: str) -> str:
    """The stored envelope text with ``replay`` set, for re-sending a stored event."""
    message = orjson.loads(text)
    message["replay"] = True
    return dumps(message)


# ---------------------------------------------------------------------------- client messages


class ProtocolError(Exception):
    """A client message that is refused; becomes an ``error`` event, the socket stays open."""

    def __init__(self, detail: str, error: ErrorCode = ErrorCode.INVALID_MESSAGE, **extra: Any):
        super().__init__(detail)
        self.error = error
        self.detail = detail
        self.extra = extra  # more fields of the error event, e.g. retry_after


@dataclass(frozen=True)
class ClientMessage:
    action: Action
    fields: dict[str, Any] = field(default_factory=dict)


def _trace_id(message: dict, name: str = "trace_id") -> uuid.UUID:
    raw = message.get(name)
    if not isinstance(raw, str) or not raw:
        raise ProtocolError(f"'{name}' is required and must be a string")
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ProtocolError(f"'{name}' is not a valid trace id: {raw[:60]!r}") from None


def _integer(message: dict, name: str, default: int | None, minimum: int, maximum: int | None = None) -> int | None:
    raw = message.get(name, default)
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ProtocolError(f"'{name}' must be an integer")
    if raw < minimum or (maximum is not None and raw > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ProtocolError(f"'{name}' must be {bound}")
    return raw


def _start_agent(message: dict) -> dict:
    question = message.get("question")
    if not isinstance(question, str):
        raise ProtocolError("'question' is required and must be a string")
    question = question.strip()
    if not question:
        raise ProtocolError("'question' must not be empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise ProtocolError(f"'question' is longer than {MAX_QUESTION_CHARS} characters")
    model = message.get("model")
    if model is not None and (not isinstance(model, str) or not 0 < len(model) <= 100):
        raise ProtocolError("'model' must be a model name of 1 to 100 characters")
    return {
        "question": question,
        "max_steps": _integer(message, "max_steps", None, 1, MAX_STEPS_LIMIT),
        "model": model,
        "rerun_of": _trace_id(message, "rerun_of") if message.get("rerun_of") is not None else None,
    }


def _subscribe_trace(message: dict) -> dict:
    return {"trace_id": _trace_id(message), "after_seq": _integer(message, "after_seq", 0, 0)}


def _replay_trace(message: dict) -> dict:
    speed = message.get("speed", 1)
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0 <= speed <= MAX_REPLAY_SPEED:
        raise ProtocolError(f"'speed' must be a number from 0 to {MAX_REPLAY_SPEED:g} (0 = as fast as possible)")
    return {"trace_id": _trace_id(message), "speed": float(speed)}


def _ping(message: dict) -> dict:
    client_time = message.get("client_time")
    if client_time is not None and not isinstance(client_time, (str, int, float)):
        raise ProtocolError("'client_time' must be a string or a number")
    if isinstance(client_time, str):
        client_time = client_time[:100]
    return {"client_time": client_time}


_PARSERS = {
    Action.START_AGENT: _start_agent,
    Action.CANCEL_AGENT: lambda message: {},
    Action.SUBSCRIBE_TRACE: _subscribe_trace,
    Action.UNSUBSCRIBE_TRACE: lambda message: {"trace_id": _trace_id(message)},
    Action.SUBSCRIBE_ALL: lambda message: {},
    Action.REPLAY_TRACE: _replay_trace,
    Action.PING: _ping,
}


def parse_client_message(text: str | None = None, data: bytes | None = None) -> ClientMessage:
    """Validate one WebSocket frame from a client."""
    if text is None:
        if data is None:
            raise ProtocolError("empty message")
        if len(data) > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"message is larger than {MAX_MESSAGE_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("binary message is not UTF-8 JSON") from None
    if len(text) > MAX_MESSAGE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message is larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"not valid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("message must be a JSON object")
    action = message.get("action")
    if not isinstance(action, str) or not action:
        raise ProtocolError("'action' is required")
    try:
        known = Action(action)
    except ValueError:
        raise ProtocolError(f"unknown action {action[:40]!r}; expected one of {', '.join(Action)}") from None
    return ClientMessage(known, _PARSERS[known](message))
