"""The envelope builder and client-message validation follow PROTOCOL.md."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from agents.events import EventType, format_timestamp, parse_timestamp
from traces import protocol
from traces.protocol import Action, ErrorCode, ProtocolError, ServerEvent

TRACE_ID = uuid.UUID("0f5c2f7e-3d43-4f55-9d1e-7f3f0f6e8a11")
TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.mark.parametrize("event_type", [*EventType, *ServerEvent])
def test_it_builds_an_envelope_for_every_event_type(event_type):
    is_trace_event = event_type in protocol.TRACE_EVENTS
    message = protocol.envelope(
        event_type,
        {"k": "值"},
        session_id="session_xyz789",
        trace_id=TRACE_ID if is_trace_event else None,
        seq=7 if is_trace_event else None,
    )
    assert message["event_type"] == event_type.value
    assert TIMESTAMP_RE.match(message["timestamp"])
    assert message["session_id"] == "session_xyz789"
    assert message["data"] == {"k": "值"}
    assert isinstance(message["message_id"], str) and message["message_id"]
    if is_trace_event:
        assert message["trace_id"] == str(TRACE_ID)
        assert message["seq"] == 7
        assert message["replay"] is False
    else:
        assert "seq" not in message and "trace_id" not in message
    assert json.loads(protocol.dumps(message)) == message


def test_it_formats_timestamps_in_utc_with_milliseconds():
    moment = dt.datetime(2025, 9, 24, 14, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert format_timestamp(moment) == "2025-09-24T12:00:00.123Z"
    assert parse_timestamp("2025-09-24T12:00:00.123Z") == moment.replace(microsecond=123000)


def test_it_gives_a_trace_event_the_same_message_id_every_time():
    first = protocol.envelope(EventType.TRACE_STARTED, {}, session_id="a", trace_id=TRACE_ID, seq=1)
    again = protocol.envelope(EventType.TRACE_STARTED, {}, session_id="a", trace_id=TRACE_ID, seq=1, replay=True)
    other = protocol.envelope(EventType.TRACE_STARTED, {}, session_id="a", trace_id=uuid.uuid4(), seq=1)
    assert first["message_id"] == again["message_id"] == f"trace_started_{TRACE_ID.hex}_1"
    assert other["message_id"] != first["message_id"]


def test_it_gives_other_events_unique_message_ids():
    ids = {protocol.envelope(ServerEvent.PONG, {}, session_id="a")["message_id"] for _ in range(100)}
    assert len(ids) == 100


def test_it_marks_a_stored_envelope_as_replayed():
    text = protocol.dumps(protocol.envelope(EventType.TRACE_STARTED, {}, session_id="a", trace_id=TRACE_ID, seq=1))
    replayed = json.loads(protocol.mark_replay(text))
    assert replayed["replay"] is True
    assert replayed["message_id"] == json.loads(text)["message_id"]


def test_it_names_session_groups_within_channel_layer_limits():
    assert protocol.session_group("session_xyz789") == "session.session_xyz789"
    long_group = protocol.session_group("x" * 100)
    assert len(long_group) < 100 and long_group != protocol.session_group("y" * 100)
    assert protocol.session_group("x" * 100, 7, namespaced=True).startswith("session.h")


namespaces = st.one_of(st.none(), st.integers(min_value=1, max_value=10**9))
session_ids = st.from_regex(protocol.SESSION_ID_RE, fullmatch=True)


@given(a=st.tuples(namespaces, session_ids), b=st.tuples(namespaces, session_ids))
def test_no_chosen_session_id_reaches_another_namespaces_group(a, b):
    """With auth, a session id may hold dots and look like a namespace (``u1.tab``): it still maps
    onto no other user's, nor the unowned namespace's, group; each name is a valid group name."""
    group_a = protocol.session_group(a[1], a[0], namespaced=True)
    assert re.fullmatch(r"[A-Za-z0-9_.-]{1,99}", group_a)
    assume(a != b)
    assert group_a != protocol.session_group(b[1], b[0], namespaced=True)


def test_a_namespaced_session_id_spelling_a_user_is_not_that_users_session():
    assert protocol.session_group("u1.tab", None, namespaced=True) != protocol.session_group("tab", 1, namespaced=True)
    assert protocol.session_group("1.tab", 2, namespaced=True) != protocol.session_group("tab", 21, namespaced=True)


def parse(message) -> protocol.ClientMessage:
    return protocol.parse_client_message(message if isinstance(message, str) else json.dumps(message))


def test_it_accepts_the_original_start_agent_message():
    message = parse({"action": "start_agent", "question": "显示用户表的10条用户数据"})
    assert message.action == Action.START_AGENT
    assert message.fields == {
        "question": "显示用户表的10条用户数据",
        "max_steps": None,
        "model": None,
        "rerun_of": None,
    }


@pytest.mark.parametrize(
    "message, fields",
    [
        (
            {"action": "start_agent", "question": " hi ", "max_steps": 3, "model": "gpt-4o"},
            {"question": "hi", "max_steps": 3, "model": "gpt-4o", "rerun_of": None},
        ),
        (
            {"action": "start_agent", "question": "hi", "rerun_of": str(TRACE_ID)},
            {"question": "hi", "max_steps": None, "model": None, "rerun_of": TRACE_ID},
        ),
        ({"action": "cancel_agent"}, {}),
        ({"action": "subscribe_trace", "trace_id": str(TRACE_ID)}, {"trace_id": TRACE_ID, "after_seq": 0}),
        (
            {"action": "subscribe_trace", "trace_id": str(TRACE_ID), "after_seq": 12},
            {"trace_id": TRACE_ID, "after_seq": 12},
        ),
        ({"action": "unsubscribe_trace", "trace_id": str(TRACE_ID)}, {"trace_id": TRACE_ID}),
        ({"action": "subscribe_all"}, {}),
        ({"action": "replay_trace", "trace_id": str(TRACE_ID)}, {"trace_id": TRACE_ID, "speed": 1.0}),
        ({"action": "replay_trace", "trace_id": str(TRACE_ID), "speed": 0}, {"trace_id": TRACE_ID, "speed": 0.0}),
        ({"action": "ping", "client_time": 1727179200000}, {"client_time": 1727179200000}),
        ({"action": "ping"}, {"client_time": None}),
    ],
)
def test_it_accepts_every_action(message, fields):
    parsed = parse(message)
    assert parsed.action == message["action"]
    assert parsed.fields == fields


@pytest.mark.parametrize(
    "raw, detail",
    [
        ("not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"start_agent"', "must be a JSON object"),
        ("{}", "'action' is required"),
        ({"action": 5}, "'action' is required"),
        ({"action": "launch_missiles"}, "unknown action"),
        ({"action": "start_agent"}, "'question' is required"),
        ({"action": "start_agent", "question": 42}, "'question' is required"),
        ({"action": "start_agent", "question": "   "}, "must not be empty"),
        ({"action": "start_agent", "question": "x" * 4001}, "longer than 4000"),
        ({"action": "start_agent", "question": "q", "max_steps": 0}, "'max_steps' must be between 1 and 50"),
        ({"action": "start_agent", "question": "q", "max_steps": True}, "'max_steps' must be an integer"),
        ({"action": "start_agent", "question": "q", "model": ""}, "'model' must be a model name"),
        ({"action": "subscribe_trace"}, "'trace_id' is required"),
        ({"action": "subscribe_trace", "trace_id": "../../etc/passwd"}, "not a valid trace id"),
        ({"action": "subscribe_trace", "trace_id": str(TRACE_ID), "after_seq": -1}, "'after_seq' must be at least 0"),
        ({"action": "subscribe_trace", "trace_id": str(TRACE_ID), "after_seq": "3"}, "'after_seq' must be an integer"),
        ({"action": "replay_trace", "trace_id": str(TRACE_ID), "speed": -1}, "'speed' must be a number"),
        ({"action": "replay_trace", "trace_id": str(TRACE_ID), "speed": "fast"}, "'speed' must be a number"),
        ({"action": "ping", "client_time": {"a": 1}}, "'client_time' must be"),
        ({"action": "ping", "pad": "x" * (64 * 1024)}, "larger than 65536 bytes"),
    ],
)
def test_it_rejects_malformed_messages_with_a_detail(raw, detail):
    with pytest.raises(ProtocolError) as caught:
        parse(raw)
    assert caught.value.error == ErrorCode.INVALID_MESSAGE == "Invalid message format"
    assert detail in caught.value.detail


def test_it_rejects_binary_frames_that_are_not_utf8_or_too_large():
    with pytest.raises(ProtocolError, match="not UTF-8"):
        protocol.parse_client_message(data=b"\xff\xfe")
    with pytest.raises(ProtocolError, match="larger than"):
        protocol.parse_client_message(data=b" " * (64 * 1024 + 1))
    assert protocol.parse_client_message(data=b'{"action":"ping"}').action == Action.PING


def test_it_counts_the_size_limit_in_bytes_not_characters():
    question = "数" * 4000  # 12,000 bytes: within both limits
    assert parse({"action": "start_agent", "question": question}).fields["question"] == question
    with pytest.raises(ProtocolError, match="larger than"):
        parse({"action": "ping", "client_time": "数" * 22000})


@given(
    st.datetimes(
        min_value=dt.datetime(1900, 1, 1),
        max_value=dt.datetime(2200, 1, 1),
        timezones=st.sampled_from(
            [dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(-dt.timedelta(hours=8))]
        ),
    )
)
def test_timestamps_are_formatted_as_isoformat_would_whatever_was_formatted_before(moment):
    # Formatted from a cache of whole seconds: the same text as isoformat's, in UTC.
    expected = moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert format_timestamp(moment) == expected
    assert format_timestamp(moment) == expected  # the second time from the cache
