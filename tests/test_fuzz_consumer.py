"""Arbitrary JSON and bytes never break the consumer or the server."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.live import connect, receive
from traces.protocol import Action

pytestmark = [pytest.mark.django_db(transaction=True)]

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
# Messages that look like actions, with arbitrary field values (start_agent is excluded: it would run the agent).
ACTIONISH = st.builds(
    lambda action, extra: {"action": action, **extra},
    st.sampled_from([a.value for a in Action if a != Action.START_AGENT] + ["", "START_AGENT", "start_agent "]),
    st.dictionaries(
        st.sampled_from(["trace_id", "after_seq", "speed", "client_time", "question", "model"]), JSON, max_size=4
    ),
)
FRAMES = st.one_of(
    JSON.map(json.dumps),
    ACTIONISH.map(json.dumps),
    st.text(max_size=200),
    st.binary(max_size=200),
)


async def test_fuzzed_frames_get_answers_and_the_socket_stays_open(settings):
    settings.TRACE_RATE_LIMIT = 100000
    communicator = connect("/ws/fuzz")
    connected, _ = await communicator.connect()
    assert connected
    await receive(communicator)
    frames: list = []

    @hsettings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(FRAMES)
    def collect(frame):
        frames.append(frame)

    collect()
    for frame in frames:
        key = "bytes" if isinstance(frame, bytes) else "text"
        await communicator.send_input({"type": "websocket.receive", key: frame})
        # Every frame gets at most a few answers, each a well-formed envelope; drain them.
        while not await communicator.receive_nothing(0.01):
            output = await communicator.receive_output(1)
            assert output["type"] == "websocket.send", output
            message = json.loads(output["text"])
            assert {"event_type", "timestamp", "message_id", "session_id", "data"} <= message.keys()
    await communicator.send_to(text_data='{"action": "ping", "client_time": 1}')
    while True:
        message = await receive(communicator)
        if message["event_type"] == "pong":
            break
    await communicator.disconnect()
