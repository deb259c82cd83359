"""One log line per connection and per run, with ids; never the question or answer at INFO."""

import logging

import pytest

from tests.live import connect, receive, receive_until, send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("configured_agent_db")]


async def test_it_logs_connections_and_runs_without_their_content(caplog):
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="traces")
    communicator = connect("/ws/logged")
    await communicator.connect()
    await receive(communicator)
    await send(communicator, action="start_agent", question="secret question about 用户")
    messages = await receive_until(communicator, "trace_completed")
    await communicator.disconnect()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("traces")]
    trace_id = messages[0]["trace_id"]
    assert any(line.startswith("websocket opened session=logged") for line in lines)
    assert any(line.startswith("websocket closed session=logged") for line in lines)
    assert any(line.startswith(f"run started trace={trace_id} session=logged") for line in lines)
    assert any(line.startswith(f"run finished trace={trace_id} session=logged status=success") for line in lines)
    assert not any("secret question" in r.getMessage() or "Alice" in r.getMessage() for r in caplog.records)
