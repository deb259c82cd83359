"""Moving history between instances: traces as JSON lines, streamed in constant memory."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from django.contrib.auth import get_user_model
from django.db import DataError, IntegrityError, transaction

from agents.events import RUN_EVENTS, EventType, parse_timestamp
from traces import protocol
from traces.models import Run, Trace
from traces.scores import record_feedback
from traces.store.serializers import (
    HEADER_KEYS,
    TRACE_EXPORT_FIELDS,
    trace_documents,
    trace_header,
)
from traces.store.writer import FailureKind, Numbered, store_now

CHUNK = 200
CSV_FIELDS = ["id", *TRACE_EXPORT_FIELDS]
# A line (one trace) of an import is read up to this many bytes by default; a longer one stops the
# import there, so a file without line breaks (or /dev/zero) is not read into memory whole. 16 of
# the largest events (TRACE_MAX_EVENT_BYTES' default), or hundreds of ordinary ones.
MAX_LINE_BYTES = 16 * 1024 * 1024
# Levels of lists and objects in a line, at most: a stored event nests 255 at most (what the store's
# JSON writer writes) and a line adds two; a deeper one is not an export.
MAX_LINE_DEPTH = 300


class InvalidLine(ValueError):
    """A line of an import file that is not a trace as exporttraces writes it; the message says where."""


def _pages(traces) -> Iterator[list[dict[str, Any]]]:
    """The traces' export headers, oldest first, a page of about ``CHUNK`` at a time: constant
    memory and constant time per page however many traces there are.

    The order is the same on every database: by start time, then by id as text. The database
    orders by start time alone, through trace_started_idx (read backwards); ids are compared
    here, within a page, because as a value MariaDB's native UUID type sorts by the id's last
    group first, SQLite and MySQL by its first, and ordering by the id's text is a sort of every
    remaining trace for each page. A page ends where a start time ends, so that traces started at
    the same moment are on the same page: it takes every trace up to the ``CHUNK``-th one's start
    (more than ``CHUNK`` only when several traces share that moment).
    """
    traces = traces.order_by()
    after = None
    while True:
        rest = traces if after is None else traces.filter(started_at__gt=after)
        # Read first, on its own: as a subquery in the page's condition, MariaDB does not bound
        # the page's index range by it, and reads every trace left for every page.
        last_start = rest.order_by("started_at").values_list("started_at", flat=True)[CHUNK - 1 : CHUNK].first()
        page = rest if last_start is None else rest.filter(started_at__lte=last_start)
        rows = sorted(_header_rows(page), key=lambda row: (row["started_at"], row["id"]))
        if rows:
            yield rows
        if last_start is None:  # without a CHUNK-th trace, the page held all that was left
            return
        after = last_start


def _header_rows(traces) -> Iterator[dict[str, Any]]:
    """Rows with what the export says of each trace, straight from the database: no Trace instances."""
    owner = f"owner__{get_user_model().USERNAME_FIELD}"
    for values in traces.values_list("id", *TRACE_EXPORT_FIELDS, "rerun_of_id", owner):
        row = dict(zip(HEADER_KEYS, values, strict=True))
        row["id"] = str(row["id"])
        yield row


def export_jsonl(traces, progress: Callable[[int], None] | None = None) -> Iterator[str]:
    """One line per trace: its fields, runs and events. ``progress`` is told how many traces each page held."""
    for rows in _pages(traces):
        for document in trace_documents(rows):
            yield protocol.dumps(document) + "\n"
        if progress is not None:
            progress(len(rows))


def export_csv(traces, progress: Callable[[int], None] | None = None) -> Iterator[str]:
    """A header line, then one row per trace (its fields; no runs or events), a page at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_FIELDS)
    for rows in _pages(traces):
        for row in rows:
            document = trace_header(row)
            writer.writerow(
                [
                    document[name] if not isinstance(document[name], dict) else protocol.dumps(document[name])
                    for name in CSV_FIELDS
                ]
            )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if progress is not None:
            progress(len(rows))
    yield buffer.getvalue()


def _time(value):
    return parse_timestamp(value) if value else None


def import_jsonl(stream: BinaryIO, user: Any = None, max_line_bytes: int = MAX_LINE_BYTES) -> tuple[int, int]:
    """Load an export, a line at a time: (imported, skipped because already here).

    Each trace is ``user``'s; without one, the user the export names as its owner if there is
    such a user here, else nobody's. Stops at the first line that is not an exported trace (or is
    longer than ``max_line_bytes``), raising InvalidLine with its number; the traces before it
    stay imported (importing the file again skips them).
    """
    imported = skipped = 0
    links: dict[str, str] = {}
    owners = _Owners(user)
    try:
        for number, raw in enumerate(iter(lambda: stream.readline(max_line_bytes + 1), b""), start=1):
            # A malformed document raises one of these, or the database refuses what no export holds.
            try:
                line = _line(raw, max_line_bytes)
                if not line.strip():
                    continue
                document = _document(line)
                added = import_document(document, owners.of(document))
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


class _Owners:
    """Who an imported trace belongs to: the importer's choice, else the export's owner if that user
    is here (each name looked up once), else nobody."""

    def __init__(self, user: Any) -> None:
        self.user_id: int | None = user.pk if user is not None else None
        self.chosen = user is not None
        self.by_name: dict[str, int | None] = {}

    def of(self, document: dict) -> int | None:
        if self.chosen:
            return self.user_id
        name = document.get("owner")
        if not isinstance(name, str) or not name:
            return None
        if name not in self.by_name:
            found = user_named(name)
            self.by_name[name] = found.pk if found is not None else None
        return self.by_name[name]


def user_named(name: str) -> Any | None:
    """The user whose username is ``name``, or None."""
    model = get_user_model()
    try:
        return model._default_manager.get_by_natural_key(name)
    except model.DoesNotExist:
        return None


def _line(raw: bytes, max_bytes: int) -> str:
    if len(raw) > max_bytes and raw[max_bytes:] != b"\n":
        raise InvalidLine(f"longer than {max_bytes:,} bytes (see --max-line-bytes)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidLine("not UTF-8 text") from None


def _problem(exc: Exception) -> str:
    if isinstance(exc, InvalidLine):
        return str(exc)
    if isinstance(exc, KeyError):
        return f"a field is missing: {exc}"
    return f"not a trace export: {type(exc).__name__}: {exc}"


def _document(line: str) -> dict:
    too_deep = InvalidLine(f"not JSON: nested deeper than {MAX_LINE_DEPTH} levels")
    try:
        document = json.loads(line)
    except ValueError as exc:
        raise InvalidLine(f"not JSON: {exc}") from None
    except RecursionError:  # deeper than the parser goes (about 1,000 levels)
        raise too_deep from None
    if protocol.nested_deeper(document, MAX_LINE_DEPTH):
        raise too_deep
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
def import_document(document: dict, owner_id: int | None = None) -> bool:
    """Load one exported trace, ``owner_id``'s; False if a trace with its id is already here
    (idempotent).

    Its events are stored as they were sent, and its rows are projected from them, as the live
    store projects every trace's (``traces.store.projection``); of the exported rows only what no
    event says is kept (its session, source and feedback; the feedback also becomes its ``feedback``
    score). Its runs are its own: a run whose parent is not a run of the trace, or whose id another
    trace's run has, is refused."""
    trace_id = uuid.UUID(document["id"])
    if Trace.objects.filter(pk=trace_id).exists():
        return False
    messages = document.get("events") or []
    if not messages:
        raise InvalidLine("the trace has no events: its rows cannot be rebuilt")
    events = []
    parents: list[tuple[uuid.UUID, uuid.UUID | None]] = []  # (run, its parent) as each event says
    for message in sorted(messages, key=lambda m: m["seq"]):
        kind = EventType(message["event_type"])
        if uuid.UUID(str(message["trace_id"])) != trace_id:
            raise InvalidLine(f"event {message['seq']} belongs to another trace")
        if kind in RUN_EVENTS and (message.get("data") or {}).get("run_id"):
            run, parent = message["data"]["run_id"], message["data"].get("parent_run_id")
            parents.append((uuid.UUID(str(run)), uuid.UUID(str(parent)) if parent else None))
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
    _own_runs(parents)
    origin = {name: document.get(name) for name in ORIGIN_FIELDS if document.get(name) is not None}
    origin["owner_id"] = owner_id
    origin["started_at"] = _time(document.get("started_at")) or events[0].timestamp
    # rerun_of is linked by link_reruns() once the whole file is in: the original may come later.
    outcome = store_now(events, {trace_id: origin})
    failure = outcome.failed.get(trace_id)
    if failure is not None:
        if failure.kind == FailureKind.UNAVAILABLE:
            raise ImportFailed(failure.reason)
        raise InvalidLine(f"its events cannot be stored: {failure.reason}")
    if origin.get("feedback") is not None:
        record_feedback(trace_id, origin["feedback"], origin.get("feedback_comment") or "")
    return True


def _own_runs(parents: list[tuple[uuid.UUID, uuid.UUID | None]]) -> None:
    """Refuses a run under a parent that is not a run of the trace, and run ids that are taken."""
    runs = {run for run, _ in parents}
    for run, parent in parents:
        if parent is not None and parent not in runs:
            raise InvalidLine(f"run {run}: its parent {parent} is not a run of this trace")
    ids = list(runs)
    for start in range(0, len(ids), CHUNK):
        taken = Run.objects.filter(pk__in=ids[start : start + CHUNK]).values_list("pk", flat=True).first()
        if taken is not None:
            raise InvalidLine(f"run {taken} is a run of another trace")


def link_reruns(links: dict[str, str]) -> int:
    """Set rerun_of (trace id -> original id) where the original is here."""
    present = set(map(str, Trace.objects.filter(pk__in=list(links.values())).values_list("pk", flat=True)))
    linked = 0
    for trace_id, original in links.items():
        if str(uuid.UUID(original)) in present:
            linked += Trace.objects.filter(pk=trace_id, rerun_of__isnull=True).update(rerun_of=original)
    return linked
