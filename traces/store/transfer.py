"""Moving history between instances: traces as JSON lines, streamed in constant memory."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterable, Iterator

from django.db import DataError, IntegrityError, transaction
from django.db.models import CharField, Q
from django.db.models.functions import Cast

from agents.events import EventType, parse_timestamp
from traces import protocol
from traces.models import Trace
from traces.store.serializers import TRACE_EXPORT_FIELDS, trace_documents, trace_header
from traces.store.writer import FailureKind, Numbered, store_now

CHUNK = 200
CSV_FIELDS = ["id", *TRACE_EXPORT_FIELDS]


class InvalidLine(ValueError):
    """A line of an import file that is not a trace as exporttraces writes it; the message says where."""


def _chunks(traces) -> Iterator[list[Trace]]:
    """Oldest first, in keyset pages: constant memory however many traces there are.

    The order is the same on every database: by start time, then by id compared as text (as a
    value, MariaDB's native UUID type sorts by the id's last group first, SQLite and MySQL by its first).
    """
    traces = traces.annotate(id_text=Cast("pk", CharField())).order_by("started_at", "id_text")
    last = None
    while True:
        page = traces
        if last is not None:
            page = page.filter(
                Q(started_at__gt=last.started_at) | Q(started_at=last.started_at, id_text__gt=last.id_text)
            )
        batch = list(page[:CHUNK])
        if not batch:
            return
        yield batch
        last = batch[-1]


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


def import_jsonl(lines: Iterable[str]) -> tuple[int, int]:
    """Load an export, a line at a time: (imported, skipped because already here).

    Stops at the first line that is not an exported trace, raising InvalidLine with its number;
    the traces before it stay imported (importing the file again skips them).
    """
    imported = skipped = 0
    links: dict[str, str] = {}
    try:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            # A malformed document raises one of these, or the database refuses what no export holds.
            try:
                document = _document(line)
                added = import_document(document)
            except (KeyError, TypeError, AttributeError, ValueError, ArithmeticError, IntegrityError, DataError) as exc:
                raise InvalidLine(f"line {number}: {_problem(exc)} (traces imported before it: {imported})") from None
            if added:
                imported += 1
                if document.get("rerun_of"):
                    links[document["id"]] = document["rerun_of"]
            else:
                skipped += 1
    finally:
        link_reruns(links)
    return imported, skipped


def _problem(exc: Exception) -> str:
    if isinstance(exc, InvalidLine):
        return str(exc)
    if isinstance(exc, KeyError):
        return f"a field is missing: {exc}"
    return f"not a trace export: {type(exc).__name__}: {exc}"


def _document(line: str) -> dict:
    try:
        document = json.loads(line)
    except ValueError as exc:
        raise InvalidLine(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidLine("not a JSON object")
    if not isinstance(document.get("id"), str):
        raise InvalidLine('no trace "id"')
    try:
        uuid.UUID(document["id"])
    except ValueError:
        raise InvalidLine(f'"id" is not a trace id: {document["id"][:60]!r}') from None
    return document


class ImportFailed(Exception):
    """The history database could not be written: nothing more is imported."""


# What an imported trace's row keeps of the export: what no event says.
ORIGIN_FIELDS = ("session_id", "source", "feedback", "feedback_comment")


@transaction.atomic
def import_document(document: dict) -> bool:
    """Load one exported trace; False if a trace with its id is already here (idempotent).

    Its events are stored as they were sent, and its rows are projected from them, as the live
    store projects every trace's (``traces.store.projection``); of the exported rows only what no
    event says is kept (its session, source and feedback)."""
    trace_id = uuid.UUID(document["id"])
    if Trace.objects.filter(pk=trace_id).exists():
        return False
    messages = document.get("events") or []
    if not messages:
        raise InvalidLine("the trace has no events: its rows cannot be rebuilt")
    events = []
    for message in sorted(messages, key=lambda m: m["seq"]):
        kind = EventType(message["event_type"])
        if uuid.UUID(str(message["trace_id"])) != trace_id:
            raise InvalidLine(f"event {message['seq']} belongs to another trace")
        events.append(
            Numbered(
                trace_id,
                int(message["seq"]),
                kind,
                parse_timestamp(message["timestamp"]),
                str(message["message_id"]),
                protocol.dumps(message),
                message.get("data") or None,
            )
        )
    origin = {name: document.get(name) for name in ORIGIN_FIELDS if document.get(name) is not None}
    origin["started_at"] = _time(document.get("started_at")) or events[0].timestamp
    # rerun_of is linked by link_reruns() once the whole file is in: the original may come later.
    outcome = store_now(events, {trace_id: origin})
    failure = outcome.failed.get(trace_id)
    if failure is not None:
        if failure.kind == FailureKind.UNAVAILABLE:
            raise ImportFailed(failure.reason)
        raise InvalidLine(f"its events cannot be stored: {failure.reason}")
    return True


def link_reruns(links: dict[str, str]) -> int:
    """Set rerun_of (trace id -> original id) where the original is here."""
    present = set(map(str, Trace.objects.filter(pk__in=list(links.values())).values_list("pk", flat=True)))
    linked = 0
    for trace_id, original in links.items():
        if str(uuid.UUID(original)) in present:
            linked += Trace.objects.filter(pk=trace_id, rerun_of__isnull=True).update(rerun_of=original)
    return linked
