"""With the channel layer down (every call raises: the bus between processes cannot send or hear),
a socket still opens, subscribes, resumes and replays from the stored history, runs still finish
and are stored and delivered in this process, and the outage is said once and counted."""

from __future__ import annotations

import logging

import pytest
from channels.db import database_sync_to_async
from prometheus_client import REGISTRY

from tests.factories import make_trace
from tests.live import connect, receive, receive_until, send
from traces.compat import InMemoryChannelLayer
from traces.models import Trace

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("configured_agent_db")]


class DownLayer(InMemoryChannelLayer):
    """A channel layer whose every call fails, as channels-redis does while Redis is unreachable."""

    calls = 0
    crosses_processes = True  # as Redis: the processes' bus uses it

    def _fail(self, *args, **kwargs):
        DownLayer.calls += 1
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    async def new_channel(self, prefix="specific."):
        self._fail()

    async def receive(self, channel):
        self._fail()

    async def send(self, channel, message):
        self._fail()

    async def group_add(self, group, channel):
        self._fail()

    async def group_discard(self, group, channel):
        self._fail()

    async def group_send(self, group, message):
        self._fail()


@pytest.fixture
def layer_down(settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "traces.live.layer.BestEffortLayer",
            "CONFIG": {"backend": "tests.test_layer_down.DownLayer"},
        }
    }
    DownLayer.calls = 0


def errors_counted() -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "tracesite_channel_layer_errors"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def opened(path: str):
    communicator = connect(path)
    connected, _ = await communicator.connect()
    assert connected
    hello = await receive(communicator)
    assert hello["event_type"] == "connection_established"
    return communicator


@pytest.mark.usefixtures("layer_down")
async def test_subscribe_resume_and_replay_work_from_the_history(caplog):
    caplog.set_level(logging.WARNING, logger="traces.live.layer")
    errors_before = errors_counted()
    trace = await database_sync_to_async(make_trace)("stored while the layer is down")
    communicator = await opened("/ws/layer-down")

    await send(communicator, action="subscribe_trace", trace_id=str(trace.pk))
    backlog = await receive_until(communicator, "trace_completed")
    assert [m["seq"] for m in backlog] == list(range(1, trace.last_seq + 1))

    again = await opened("/ws/layer-down-resume")
    await send(again, action="subscribe_trace", trace_id=str(trace.pk), after_seq=1)
    resumed = await receive_until(again, "trace_completed")
    assert [m["seq"] for m in resumed] == list(range(2, trace.last_seq + 1))

    await send(communicator, action="replay_trace", trace_id=str(trace.pk), speed=0)
    replayed = await receive_until(communicator, "replay_completed")
    stored = await database_sync_to_async(lambda: list(trace.events.values_list("event_type", flat=True)))()
    assert [m["event_type"] for m in replayed] == ["replay_started", *stored, "replay_completed"]
    assert all(m["replay"] for m in replayed[1:-1])

    await send(communicator, action="ping")
    assert (await receive(communicator))["event_type"] == "pong"  # the socket is as alive as ever
    await communicator.disconnect()
    await again.disconnect()

    assert DownLayer.calls > 0 and errors_counted() > errors_before
    outages = [r for r in caplog.records if "live delivery failing" in r.getMessage()]
    assert len(outages) == 1  # said once for the outage, not once per call


@pytest.mark.usefixtures("layer_down")
async def test_a_run_started_while_the_layer_is_down_is_stored_and_followed_by_seq():
    communicator = await opened("/ws/layer-down-run?protocol=2")
    await send(communicator, action="start_agent", question="how many users?")
    trace = None
    for _ in range(100):  # no live events can come: find the run in the history
        trace = await Trace.objects.filter(session_id="layer-down-run").afirst()
        if trace is not None and trace.status != Trace.Status.RUNNING:
            break
        await communicator.receive_nothing(0.1)
    assert trace is not None and trace.status == Trace.Status.SUCCESS
    await send(communicator, action="subscribe_trace", trace_id=str(trace.pk))
    messages = await receive_until(communicator, "trace_completed")
    assert [m["seq"] for m in messages] == list(range(1, trace.last_seq + 1))
    await communicator.disconnect()


async def test_the_outage_ends_with_one_line_and_the_gauge_back_up(caplog):
    """The wrapper notes when the layer answers again."""
    from traces.live.layer import BestEffortLayer

    caplog.set_level(logging.WARNING, logger="traces.live.layer")
    real = InMemoryChannelLayer()
    layer = BestEffortLayer(layer=real)
    failing = DownLayer()
    layer.layer = failing
    assert await layer.group_send("g", {"type": "x"}) is False
    assert await layer.group_add("g", "specific.a!b") is False
    layer.layer = real
    assert await layer.group_send("g", {"type": "x"}) is True
    messages = [r.getMessage() for r in caplog.records]
    assert sum("live delivery failing" in m for m in messages) == 1
    assert sum("live delivery restored" in m for m in messages) == 1
    assert REGISTRY.get_sample_value("tracesite_channel_layer_up") == 1.0
