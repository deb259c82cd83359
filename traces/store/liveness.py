"""No run is left "running" for ever: heartbeats of the processes that run agents, and a reaper.

Each process that runs agents or receives OTLP exports (a server process, a ``runagent``
command) registers as a ``Runner`` and writes a heartbeat; each trace records its runner. A
process that stops without closing its runs (``kill -9``, a crash, a machine that goes away)
stops beating. Every runner reaps when it starts and every ``TRACE_REAP_SECONDS``: a running trace
whose runner has not been seen for ``TRACE_RUNNER_TIMEOUT`` seconds is closed as an error
("interrupted: …") through the store, like any event: a ``trace_completed`` that continues its
seq, projected onto its rows (its open runs end as errors) and delivered to whoever follows it. A
trace that records no runner (stored before runners were recorded) is closed once it is older
than ``STALE_AFTER``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import socket
import uuid

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from agents.events import EventType, trace_failed
from traces.access import SessionKey
from traces.models import Runner, Trace
from traces.store.event_store import EventStore, TraceStoreError
from traces.store.pool import pooled
from traces.store.recorder import TraceRecorder

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
STALE_AFTER = dt.timedelta(hours=1)  # a trace with no runner recorded, running this long, died
INTERRUPTED = "interrupted: the process that ran it stopped"


@dataclasses.dataclass(frozen=True)
class Orphan:
    """A running trace whose process stopped, as its row says now."""

    id: uuid.UUID
    session_id: str
    owner_id: int | None
    last_seq: int
    total_tokens: int
    total_cost: float
    total_runs: int


def orphans(now: dt.datetime | None = None) -> list[Orphan]:
    """The running traces whose runner is gone (and forget runners gone for a day)."""
    now = now or timezone.now()
    alive = Runner.objects.filter(seen_at__gte=now - dt.timedelta(seconds=settings.TRACE_RUNNER_TIMEOUT))
    found = Trace.objects.running().filter(
        (~Q(runner="") & ~Q(runner__in=alive.values("id"))) | Q(runner="", started_at__lt=now - STALE_AFTER)
    )
    Runner.objects.filter(seen_at__lt=now - dt.timedelta(days=1)).delete()
    fields = ("id", "session_id", "owner_id", "last_seq", "total_tokens", "total_cost", "total_runs")
    return [
        Orphan(trace_id, session_id, owner_id, last_seq, tokens, float(cost), runs)
        for trace_id, session_id, owner_id, last_seq, tokens, cost, runs in found.values_list(*fields)
    ]


async def close_orphans(store: EventStore, now: dt.datetime | None = None) -> list[uuid.UUID]:
    """Close every orphan as interrupted; returns those this call closed (not those another
    reaper, or their own run after all, moved first)."""
    now = now or timezone.now()
    found = await pooled(orphans)(now)
    pending = []
    for orphan in found:
        recorder = TraceRecorder(
            store,
            trace_id=orphan.id,
            session=SessionKey.of(orphan.session_id, orphan.owner_id),
            owner_id=orphan.owner_id,
            last_seq=orphan.last_seq,
        )
        data = trace_failed(str(orphan.id), INTERRUPTED, "Interrupted")
        data["total_tokens"], data["total_cost"], data["total_runs"] = (
            orphan.total_tokens,
            orphan.total_cost,
            orphan.total_runs,
        )
        pending.append((orphan, await recorder.submit(EventType.TRACE_COMPLETED, data, now, wait_at_end=False)))
    closed = []
    for orphan, stored in pending:
        try:
            await stored
        except TraceStoreError as exc:
            logger.info("trace=%s not closed by this reaper: %s", orphan.id, exc)
            continue
        logger.warning("trace=%s closed: %s", orphan.id, INTERRUPTED)
        closed.append(orphan.id)
    return closed


class Liveness:
    """This process as a runner: its heartbeat and its reaper, from ``start()`` to ``aclose()``."""

    def __init__(self, store: EventStore, kind: str = "server") -> None:
        self.store = store
        self.id = uuid.uuid4().hex
        self.kind = kind
        self._tasks: list[asyncio.Task] = []
        self._registered: asyncio.Task | None = None

    async def start(self, reap: bool = True) -> None:
        """Register and beat; with ``reap``, close the orphans now and every ``TRACE_REAP_SECONDS``."""
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._beat(), name="runner-heartbeat")]
        if reap:
            self._tasks.append(loop.create_task(self._reap(), name="runner-reaper"))
        await pooled(self._register)()

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

    def _seen(self) -> None:
        Runner.objects.filter(id=self.id).update(seen_at=timezone.now())

    async def _beat(self) -> None:
        # Well inside the timeout, whatever it is set to.
        interval = min(HEARTBEAT_SECONDS, settings.TRACE_RUNNER_TIMEOUT / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await pooled(self._seen)()
            except Exception as exc:  # noqa: BLE001 - the database is down: the next beat tries again
                logger.warning("runner heartbeat failed: %r", exc)

    async def _reap(self) -> None:
        while True:
            try:
                await close_orphans(self.store)
            except Exception as exc:  # noqa: BLE001 - the database is down: the next round tries again
                logger.warning("reaping interrupted runs failed: %r", exc)
            await asyncio.sleep(settings.TRACE_REAP_SECONDS)

    async def aclose(self) -> None:
        """Stop beating; a process that stops cleanly removes itself (its runs are closed already)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tasks:
            try:
                await pooled(Runner.objects.filter(id=self.id).delete)()
            except Exception as exc:  # noqa: BLE001 - it will look dead and be cleaned up later
                logger.warning("could not unregister runner %s: %r", self.id, exc)
