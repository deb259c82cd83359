"""The hooks into library internals find what they hook, and say so at start-up when they do not."""

from __future__ import annotations

import functools
import logging

from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer
from twisted.internet.abstract import FileDescriptor

from traces import compat


def test_every_hook_finds_its_target_in_the_installed_libraries():
    assert compat.check() == []


def test_it_warns_at_start_up_when_a_library_moved_what_a_hook_reads(monkeypatch, caplog):
    monkeypatch.delattr(FileDescriptor, "dataBuffer")
    monkeypatch.delattr(ChannelsInMemoryChannelLayer, "_clean_expired")
    with caplog.at_level(logging.WARNING, logger="traces.compat"):
        problems = compat.warn_if_broken()
    assert len(problems) == 2
    warnings = [r.getMessage() for r in caplog.records]
    assert any("Twisted" in w and "dataBuffer" in w for w in warnings)
    assert any("InMemoryChannelLayer._clean_expired" in w for w in warnings)


def test_it_warns_when_the_redis_layer_no_longer_keeps_receive_buffers(monkeypatch):
    from channels_redis.core import RedisChannelLayer

    original = RedisChannelLayer.__init__

    def without_buffers(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.receive_buffer = {}

    monkeypatch.setattr(RedisChannelLayer, "__init__", without_buffers)
    assert any("receive_buffer" in problem for problem in compat.check())
    layer = compat.RedisChannelLayer()  # still works, without the fix
    layer.forget_channel("specific.x!y")


def test_a_probe_that_breaks_is_reported_not_raised(monkeypatch):
    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(compat, "CHECKS", [broken])
    assert compat.check() == ["broken failed: RuntimeError('boom')"]


class _Protocol:
    """Stands for daphne's WebSocket protocol object (daphne.ws_protocol)."""

    __module__ = "daphne.ws_protocol"
    transport = None


async def _handle_reply(protocol, message):
    pass


def test_the_send_buffer_warns_once_when_it_finds_no_transport_behind_daphne(monkeypatch, caplog):
    monkeypatch.setattr(compat.SendBuffer, "warned", False)
    send = functools.partial(_handle_reply, _Protocol())
    with caplog.at_level(logging.WARNING, logger="traces.compat"):
        first, second = compat.SendBuffer(send), compat.SendBuffer(send)
    assert first.pending() is None and not second.available
    assert sum("slow-client protection is off" in r.getMessage() for r in caplog.records) == 1


def test_the_send_buffer_is_silently_off_under_other_servers(caplog):
    async def send(message):
        pass

    with caplog.at_level(logging.WARNING, logger="traces.compat"):
        assert compat.SendBuffer(send).pending() is None
    assert not caplog.records
