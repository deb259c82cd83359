"""No run is left "running" for ever: heartbeats of the processes that run agents, and a reaper.

Each process that runs agents (a server process, a ``runagent`` command) registers as a
``Runner`` and writes a heartbeat every ``HEARTBEAT_SECONDS``; each trace records its runner. A
process that stops without closing its runs (``kill -9``, a crash, a machine that goes away)
stops beating. Every runner process reaps when it starts and every ``REAP_SECONDS``: a running
trace whose runner has not been seen for ``TRACE_RUNNER_TIMEOUT`` seconds is closed as an error
("interrupted: …"), with a stored ``trace_completed`` (its seq continues) delivered to whoever
follows it, and its unfinished runs end as errors. A trace that records no runner (stored before
runners were recorded) is closed once it is older than ``STALE_AFTER``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import uuid
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from agents.events import EventType, RunStatus, trace_failed
from traces import protocol
from traces.access import SessionKey
from traces.bus import get_bus
from traces.hub import StoredEvent, get_hub
from traces.loops import PerLoop
from traces.models import Event, Run, Runner, Trace

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
REAP_SECONDS = 30.0
STALE_AFTER = dt.timedelta(hours=1)  # a trace with no runner recorded, running this long, died
INTERRUPTED = "interrupted: the process that ran it stopped"


def reap(now: dt.datetime | None = None) -> list[StoredEvent]:
    """Close the running traces whose runner is gone; returns their stored ``trace_completed`` events."""
    now = now or timezone.now()
    alive = Runner.objects.filter(seen_at__gte=now - dt.timedelta(seconds=settings.TRACE_RUNNER_TIMEOUT))
    orphans = Trace.objects.running().filter(
        (~Q(runner="") & ~Q(runner__in=alive.values("id"))) | Q(runner="", started_at__lt=now - STALE_AFTER)
    )
    closed = []
    for trace in orphans.only("id", "session_id", "owner_id", "last_seq", "started_at"):
        event = close_interrupted(trace, now)
        if event is not None:
            closed.append(event)
    Runner.objects.filter(seen_at__lt=now - dt.timedelta(days=1)).delete()  # long gone
    return closed


def close_interrupted(trace: Trace, now: dt.datetime, reason: str = INTERRUPTED) -> StoredEvent | None:
    """End a running trace as interrupted: its next seq is its trace_completed. None if someone else
    (another reaper, its own run after all) moved it first."""
    seq = trace.last_seq + 1
    data = trace_failed(str(trace.pk), reason, "Interrupted")
    envelope = protocol.envelope(
        EventType.TRACE_COMPLETED, dict(data), session_id=trace.session_id, timestamp=now, trace_id=trace.pk, seq=seq
    )
    text = protocol.dumps(envelope)
    try:
        with transaction.atomic():
            moved = Trace.objects.filter(pk=trace.pk, status=Trace.Status.RUNNING, last_seq=trace.last_seq).update(
                status=Trace.Status.ERROR,
                last_seq=seq,
                ended_at=now,
                duration_ms=max(0, int((now - trace.started_at).total_seconds() * 1000)),
                error=reason,
                error_type="Interrupted",
            )
            if not moved:
                return None
            Run.objects.filter(trace_id=trace.pk, status=RunStatus.RUNNING).update(
                status=RunStatus.ERROR, error=reason, error_type="Interrupted", end_time=now
            )
            Event.objects.create(
                trace_id=trace.pk,
                seq=seq,
                event_type=EventType.TRACE_COMPLETED,
                timestamp=now,
                message_id=envelope["message_id"],
                envelope=text,
            )
    except IntegrityError:  # its seq was taken meanwhile: it is not ours to close
        return None
    logger.warning("trace=%s closed: %s", trace.pk, reason)
    group = SessionKey.of(trace.session_id, trace.owner_id).group
    return StoredEvent(str(trace.pk), seq, group, trace.owner_id, EventType.TRACE_COMPLETED, text)


class Runners:
    """This process as a runner: its heartbeat and its reaper (per event loop, started on first use)."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex
        self.kind = "server"
        self._tasks: list[asyncio.Task] = []

    async def start(self, kind: str = "server") -> None:
        if self._tasks:
            return
        self.kind = kind
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._beat(), name="runner-beat"),
            loop.create_task(self._reap(), name="runner-reap"),
        ]
        await self._on_writer(self._register)

    def _register(self) -> None:
        now = timezone.now()
        Runner.objects.update_or_create(
            id=self.id,
            defaults={
                "host": socket.gethostname()[:200],
                "pid": os.getpid(),
                "kind": self.kind,
                "started_at": now,
                "seen_at": now,
            },
        )

    async def _on_writer(self, work: Any) -> Any:
        """Database writes go through the recorder's one writer thread, in order with the batches."""
        from traces.recorder import run_on_writer

        return await run_on_writer(work)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self._on_writer(lambda: Runner.objects.filter(id=self.id).update(seen_at=timezone.now()))
            except Exception as exc:  # noqa: BLE001 - the database is down: the next beat tries again
                logger.warning("runner heartbeat failed: %r", exc)

    async def _reap(self) -> None:
        while True:
            try:
                closed = await self._on_writer(reap)
            except Exception as exc:  # noqa: BLE001 - the database is down: the next round tries again
                logger.warning("reaping interrupted runs failed: %r", exc)
                closed = []
            if closed:
                get_hub().deliver(closed)
                await get_bus().publish(closed)
            await asyncio.sleep(REAP_SECONDS)

    async def aclose(self) -> None:
        """Stop beating; a process that stops cleanly removes itself (its runs are closed already)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tasks:
            try:
                await self._on_writer(lambda: Runner.objects.filter(id=self.id).delete())
            except Exception as exc:  # noqa: BLE001 - it will look dead and be cleaned up later
                logger.warning("could not unregister runner %s: %r", self.id, exc)


_runners: PerLoop[Runners] = PerLoop(Runners)


def get_runners() -> Runners:
    return _runners.get()
