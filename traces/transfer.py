"""Moving history between instances: traces as JSON lines, streamed in constant memory."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from decimal import Decimal

from django.db import transaction

from agents.events import parse_timestamp
from traces import protocol
from traces.models import Event, Run, Trace
from traces.serializers import RUN_EXPORT_FIELDS, TRACE_EXPORT_FIELDS, trace_documents, trace_header

CHUNK = 200
CSV_FIELDS = ["id", *TRACE_EXPORT_FIELDS]


def _chunks(traces) -> Iterator[list[Trace]]:
    """Keyset pagination by primary key: constant memory however many traces there are."""
    last = None
    while True:
        page = traces.order_by("pk")
        if last is not None:
            page = page.filter(pk__gt=last)
        batch = list(page[:CHUNK])
        if not batch:
            return
        yield batch
        last = batch[-1].pk


def export_jsonl(traces) -> Iterator[str]:
    for batch in _chunks(traces):
        for document in trace_documents(batch):
            yield protocol.dumps(document) + "\n"


def export_csv(traces) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_FIELDS)
    for batch in _chunks(traces):
        for trace in batch:
            document = trace_header(trace)
            writer.writerow(
                [
                    document[name] if not isinstance(document[name], dict) else protocol.dumps(document[name])
                    for name in CSV_FIELDS
                ]
            )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _time(value):
    return parse_timestamp(value) if value else None


@transaction.atomic
def import_document(document: dict) -> bool:
    """Load one exported trace; False if a trace with its id is already here (idempotent)."""
    trace_id = uuid.UUID(document["id"])
    if Trace.objects.filter(pk=trace_id).exists():
        return False
    fields = {name: document.get(name) for name in TRACE_EXPORT_FIELDS}
    fields.update(
        started_at=_time(fields["started_at"]),
        ended_at=_time(fields["ended_at"]),
        total_cost=Decimal(str(fields["total_cost"] or 0)),
        metadata=fields["metadata"] or {},
    )
    # rerun_of is linked by link_reruns() once the whole file is in: the original may come later.
    Trace.objects.create(id=trace_id, **fields)
    runs = []
    for run in document.get("runs", []):
        values = {name: run.get(name) for name in RUN_EXPORT_FIELDS}
        values.update(start_time=_time(values["start_time"]), end_time=_time(values["end_time"]))
        runs.append(Run(id=uuid.UUID(run["id"]), trace_id=trace_id, parent_id=run.get("parent_id"), **values))
    # Parents first: a step is created before the runs under it.
    runs.sort(key=lambda r: r.parent_id is not None)
    Run.objects.bulk_create(runs, batch_size=500)
    Event.objects.bulk_create(
        [
            Event(
                trace_id=trace_id,
                seq=message["seq"],
                event_type=message["event_type"],
                timestamp=_time(message["timestamp"]),
                message_id=message["message_id"],
                run_id=(message.get("data") or {}).get("run_id"),
                envelope=protocol.dumps(message),
            )
            for message in document.get("events", [])
        ],
        batch_size=500,
    )
    return True


def link_reruns(links: dict[str, str]) -> int:
    """Set rerun_of (trace id -> original id) where the original is here."""
    present = set(map(str, Trace.objects.filter(pk__in=list(links.values())).values_list("pk", flat=True)))
    linked = 0
    for trace_id, original in links.items():
        if str(uuid.UUID(original)) in present:
            linked += Trace.objects.filter(pk=trace_id, rerun_of__isnull=True).update(rerun_of=original)
    return linked
