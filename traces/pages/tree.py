"""The trace page's run tree, a page at a time: JSON under ``/api/traces/<id>/``.

A trace can hold tens of thousands of runs; the page draws what is on screen and asks for the
rest as it is scrolled, expanded, searched or selected. Every answer reads the ``Run`` rows
(never the event log, except the events' own pages) through keyset pages in ``(start_time, id)``
order, so the 400th page costs what the first does. The access rule is the pages': a trace its
viewer may not see is a 404, as one that is not here.

- ``runs``: the children of a run (``?parent=<id>``, repeated for several at once) or the
  top-level runs, each compact, with its number of children; ``?after=<cursor>`` for the next page.
- ``runs/<run_id>``: one run in full; a model call recorded by the built-in agent (which stores
  only the messages added since the call before) with its conversation assembled, bounded.
- ``search``: the runs whose name holds ``q``, of a ``type``, a ``status``, or ``error=1``, each
  with its ancestors' ids; ``from=<run_id>`` starts after that run ("next error"). The first hit
  also carries its ``path`` as ``runs/<run_id>`` gives it (the hit and its ancestors with their
  positions), so the page places it with one request for the rows around it while the run in full
  is read alongside.
- ``events``: the stored events by seq, ``?after=<seq>``.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404

from agents.events import format_timestamp, parse_timestamp
from traces.models import Run, Trace

PAGE_SIZE = 200
MAX_PAGE_SIZE = 1000
MAX_PARENTS = 100  # children of this many runs in one request
EVENT_PAGE_SIZE = 500
MAX_MESSAGES = 300  # of a model call's conversation, the newest
FIRST_SCREEN_ROWS = 120
SMALL_FAMILY = 20  # children read with other runs' children in one query, for the first screen
COMPACT_FIELDS = (
    "id",
    "parent_id",
    "name",
    "run_type",
    "status",
    "start_time",
    "end_time",
    "duration_ms",
    "total_tokens",
    "cost",
    "error_type",
)


def visible_trace(request: HttpRequest, trace_id: uuid.UUID) -> Trace:
    return get_object_or_404(Trace.objects.visible_to(request.user), pk=trace_id)


# ---------------------------------------------------------------------------- cursors


def cursor_of(run: dict[str, Any]) -> str:
    """A run's place in ``(start_time, id)`` order, as the next page's ``after``."""
    return f"{format_timestamp(run['start_time'])}~{run['id']}"


def _parse_cursor(text: str) -> tuple[dt.datetime, uuid.UUID]:
    moment, _, run_id = text.partition("~")
    try:
        return parse_timestamp(moment), uuid.UUID(run_id)
    except (ValueError, TypeError):
        raise Http404("not a cursor of this listing") from None


def _after(runs: QuerySet[Run], cursor: tuple[dt.datetime, uuid.UUID] | None) -> QuerySet[Run]:
    if cursor is None:
        return runs
    start, run_id = cursor
    return runs.filter(Q(start_time__gt=start) | Q(start_time=start, id__gt=run_id))


def _limit(request: HttpRequest, default: int = PAGE_SIZE) -> int:
    try:
        return max(1, min(int(request.GET.get("limit", default)), MAX_PAGE_SIZE))
    except ValueError:
        return default


# ---------------------------------------------------------------------------- compact runs


def compact(runs: QuerySet[Run]) -> QuerySet[Run, dict[str, Any]]:
    """The fields a tree row shows, and the run's number of children (through run_parent_start_idx)."""
    children = Run.objects.filter(parent=OuterRef("pk")).order_by().values("parent").annotate(n=Count("*")).values("n")
    return runs.order_by("start_time", "id").values(
        *COMPACT_FIELDS,
        model=KeyTextTransform("model", "metadata"),
        child_count=Coalesce(Subquery(children, output_field=IntegerField()), Value(0)),
    )


def run_row(run: dict[str, Any]) -> dict[str, Any]:
    """A compact run as JSON."""
    cost = run["cost"]
    return {
        "id": str(run["id"]),
        "parent_id": str(run["parent_id"]) if run["parent_id"] else None,
        "name": run["name"],
        "run_type": run["run_type"],
        "status": run["status"],
        "start_time": format_timestamp(run["start_time"]),
        "end_time": format_timestamp(run["end_time"]) if run["end_time"] else None,
        "duration_ms": run["duration_ms"],
        "tokens": run["total_tokens"],
        "cost": float(cost) if isinstance(cost, Decimal) else cost,
        "model": run["model"] or None,
        "error_type": run["error_type"] or None,
        "children": run["child_count"],
    }


def top_level(trace_id: uuid.UUID) -> QuerySet[Run]:
    """A trace's top-level runs, through run_trace_start_idx. "Not a child" rather than "parent IS
    NULL": every trace's root is under NULL in run_parent_start_idx, so through that index (SQLite
    took it, without statistics, as it answers the order too) the page walked the root of every
    trace, a million of them in a history of a million traces (4–8 s)."""
    return Run.objects.filter(trace_id=trace_id).exclude(parent__isnull=False)


def children_page(
    trace: Trace,
    parent: uuid.UUID | None,
    after: tuple[dt.datetime, uuid.UUID] | None,
    size: int,
    offset: int | None = None,
) -> dict[str, Any]:
    """One page of a run's children (the top-level runs for ``parent`` None) and the next cursor.
    ``offset`` instead of ``after`` starts at that position among them: the page jumps there when
    its scrollbar is dragged (one parent's children, read from run_parent_start_idx alone)."""
    runs = Run.objects.filter(parent_id=parent) if parent else top_level(trace.pk)
    start = offset or 0
    listed = compact(_after(runs, after))
    found = list(listed[start : start + size + 1])
    more = len(found) > size
    found = found[:size]
    page: dict[str, Any] = {
        "parent": str(parent) if parent else None,
        "runs": [run_row(run) for run in found],
        "next": cursor_of(found[-1]) if more else None,
    }
    if after is None:
        page["offset"] = start
    return page


def position(run: Run) -> int:
    """How many of its siblings come before ``run`` in (start_time, id) order."""
    siblings = Run.objects.filter(parent_id=run.parent_id) if run.parent_id else top_level(run.trace_id)
    return _before(siblings, (run.start_time, run.pk)).count()


def path(run: Run) -> list[dict[str, Any]]:
    """``run`` and its ancestors, root first, each with its parent and its position among its
    siblings: what the page needs to load the pages that show it."""
    chain = [run]
    while chain[-1].parent_id:
        chain.append(Run.objects.only("id", "parent_id", "trace_id", "start_time").get(pk=chain[-1].parent_id))
    return [
        {"id": str(r.pk), "parent_id": str(r.parent_id) if r.parent_id else None, "position": position(r)}
        for r in reversed(chain)
    ]


def first_screen(trace: Trace, rows: int = FIRST_SCREEN_ROWS) -> list[dict[str, Any]]:
    """The pages that fill the page's first screen, every run expanded, as ``children_page``
    answers them: what the page embeds, read from the rows alone. A level at a time, in the order
    the rows are shown, until about ``rows`` rows: one query for a run with many children, one for
    all the runs with a few (each step's model and tool calls)."""
    pages = [children_page(trace, None, None, rows)]
    level = pages[0]["runs"]
    used = 0
    counted: set[str | None] = set()  # parents whose children were counted as they were chosen
    while level and used < rows:
        chosen = []
        for run in level:
            if run["parent_id"] not in counted or run["parent_id"] is None:
                used += 1
            if used >= rows:
                break
            if run["children"]:
                chosen.append(run)
                if run["children"] <= SMALL_FAMILY:
                    used += run["children"]  # shown right below it
                    counted.add(run["id"])
        few = [run for run in chosen if run["children"] <= SMALL_FAMILY]
        found: dict[str, list[dict[str, Any]]] = {run["id"]: [] for run in few}
        if few:
            wanted = Run.objects.filter(parent_id__in=[uuid.UUID(run["id"]) for run in few])
            for child in compact(wanted)[: sum(run["children"] for run in few)]:
                found[str(child["parent_id"])].append(run_row(child))
        level = []
        for run in chosen:
            if run["id"] in found:
                page = {"parent": run["id"], "runs": found[run["id"]], "next": None, "offset": 0}
            else:
                page = children_page(trace, uuid.UUID(run["id"]), None, rows)
            pages.append(page)
            level += page["runs"]
    return pages


# ---------------------------------------------------------------------------- views


def runs(request: HttpRequest, trace_id: uuid.UUID) -> JsonResponse:
    trace = visible_trace(request, trace_id)
    parents: list[uuid.UUID | None] = [_uuid(value) for value in request.GET.getlist("parent")[:MAX_PARENTS]]
    if not parents:
        parents = [None]
    after = _parse_cursor(request.GET["after"]) if request.GET.get("after") else None
    if after is not None and len(parents) > 1:
        return JsonResponse({"error": "after goes with one parent"}, status=400)
    if parents != [None]:
        # Only runs of this trace: a parent of another trace lists nothing.
        given = [parent for parent in parents if parent]
        mine = set(Run.objects.filter(trace=trace, pk__in=given).values_list("pk", flat=True))
        parents = [parent for parent in parents if parent in mine]
    size = _limit(request)
    offset = _offset(request)
    if offset is not None and after is not None:
        return JsonResponse({"error": "offset or after, not both"}, status=400)
    return JsonResponse({"pages": [children_page(trace, parent, after, size, offset) for parent in parents]})


def _offset(request: HttpRequest) -> int | None:
    try:
        return max(0, int(request.GET["offset"])) if request.GET.get("offset") else None
    except ValueError:
        return None


def run_detail(request: HttpRequest, trace_id: uuid.UUID, run_id: uuid.UUID) -> JsonResponse:
    trace = visible_trace(request, trace_id)
    run = get_object_or_404(Run.objects.filter(trace=trace), pk=run_id)
    body: dict[str, Any] = {
        "id": str(run.pk),
        "parent_id": str(run.parent_id) if run.parent_id else None,
        "name": run.name,
        "run_type": run.run_type,
        "status": run.status,
        "start_time": format_timestamp(run.start_time),
        "end_time": format_timestamp(run.end_time) if run.end_time else None,
        "duration_ms": run.duration_ms,
        "inputs": run.inputs,
        "outputs": run.outputs,
        "metadata": run.metadata,
        "error": run.error or None,
        "error_type": run.error_type or None,
        "usage": {
            "prompt_tokens": run.prompt_tokens,
            "completion_tokens": run.completion_tokens,
            "total_tokens": run.total_tokens,
        },
        "cost": float(run.cost),
        "model": (run.metadata or {}).get("model"),
        "path": path(run),
    }
    if run.run_type == Run.Type.THINK and isinstance(run.inputs, dict) and "messages_from" in run.inputs:
        body["conversation"] = conversation(run)
    return JsonResponse(body, json_dumps_params={"ensure_ascii": False})


def conversation(run: Run, limit: int = MAX_MESSAGES) -> dict[str, Any]:
    """What a model call of the built-in agent was sent: each call stores the messages added since
    the call before, so the conversation is the calls before it read back to front until ``limit``
    messages are found; ``omitted`` says how many older ones were left out. The tools offered are
    the last schema recorded up to this call."""
    earlier = Run.objects.filter(trace_id=run.trace_id, run_type=Run.Type.THINK).filter(
        Q(start_time__lt=run.start_time) | Q(start_time=run.start_time, id__lt=run.pk)
    )
    parts = [run.inputs.get("messages") or []]
    first = int(run.inputs.get("messages_from") or 0)
    tools = run.inputs.get("tools")
    count = len(parts[0])
    cursor = None
    while first > 0 and count < limit:
        chunk = list(_before(earlier, cursor).order_by("-start_time", "-id").values("id", "start_time", "inputs")[:50])
        if not chunk:
            break
        for call in chunk:
            inputs = call["inputs"] if isinstance(call["inputs"], dict) else {}
            messages = inputs.get("messages") or []
            parts.append(messages)
            count += len(messages)
            first = int(inputs.get("messages_from") or 0)
            if tools is None and inputs.get("tools"):
                tools = inputs["tools"]
            if first <= 0 or count >= limit:
                break
        cursor = (chunk[-1]["start_time"], chunk[-1]["id"])
    if tools is None and run.inputs.get("tool_names"):
        offered = earlier.filter(inputs__has_key="tools").order_by("-start_time", "-id").values("inputs").first()
        tools = offered["inputs"]["tools"] if offered else None
    messages = [message for part in reversed(parts) for message in part]
    cut = max(len(messages) - limit, 0)
    return {"messages": messages[cut:], "omitted": first + cut, "tools": tools}


def _before(runs: QuerySet[Run], cursor: tuple[dt.datetime, uuid.UUID] | None) -> QuerySet[Run]:
    if cursor is None:
        return runs
    start, run_id = cursor
    return runs.filter(Q(start_time__lt=start) | Q(start_time=start, id__lt=run_id))


def search(request: HttpRequest, trace_id: uuid.UUID) -> JsonResponse:
    """Runs matching every condition given, a page at a time, each with its ancestors' ids (root first)."""
    trace = visible_trace(request, trace_id)
    found = Run.objects.filter(trace=trace)
    if text := request.GET.get("q", "").strip():
        found = found.filter(name__icontains=text)
    if run_type := request.GET.get("type"):
        found = found.filter(run_type=run_type)
    if status := request.GET.get("status"):
        found = found.filter(status=status)
    if request.GET.get("error") in ("1", "true"):
        found = found.filter(Q(status=Run.Status.ERROR) | ~Q(error_type=""))
    after = _parse_cursor(request.GET["after"]) if request.GET.get("after") else None
    if start := request.GET.get("from"):
        origin = Run.objects.filter(trace=trace, pk=_uuid(start)).values_list("start_time", "id").first()
        if origin is None:
            raise Http404("no such run in this trace")
        after = origin
    size = _limit(request, 50)
    hits = list(compact(_after(found, after))[: size + 1])
    more = len(hits) > size
    hits = hits[:size]
    lineage = ancestors(trace, [hit["parent_id"] for hit in hits])
    rows = [run_row(hit) | {"ancestors": _chain(hit["parent_id"], lineage)} for hit in hits]
    if hits:  # placed without asking for the run first
        first = Run(pk=hits[0]["id"], trace=trace, parent_id=hits[0]["parent_id"], start_time=hits[0]["start_time"])
        rows[0]["path"] = path(first)
    return JsonResponse({"runs": rows, "next": cursor_of(hits[-1]) if more else None})


def ancestors(trace: Trace, parents: Iterable[uuid.UUID | None]) -> dict[uuid.UUID, uuid.UUID | None]:
    """Each of ``parents`` and all their ancestors mapped to their own parent: one query a level."""
    known: dict[uuid.UUID, uuid.UUID | None] = {}
    wanted = {parent for parent in parents if parent}
    while wanted:
        level = dict(Run.objects.filter(trace=trace, pk__in=wanted).values_list("id", "parent_id"))
        known.update(level)
        wanted = {parent for parent in level.values() if parent and parent not in known}
    return known


def _chain(parent: uuid.UUID | None, lineage: dict[uuid.UUID, uuid.UUID | None]) -> list[str]:
    chain = []
    while parent:
        chain.append(str(parent))
        parent = lineage.get(parent)
    return chain[::-1]


def events(request: HttpRequest, trace_id: uuid.UUID) -> HttpResponse:
    """The stored envelopes with a seq over ``after``, as they were sent (their text is spliced in
    as it is stored: each is a JSON object already)."""
    trace = visible_trace(request, trace_id)
    try:
        after = int(request.GET.get("after", 0))
    except ValueError:
        after = 0
    size = _limit(request, EVENT_PAGE_SIZE)
    rows = list(trace.events.filter(seq__gt=after).order_by("seq").values_list("seq", "envelope")[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    following = json.dumps(rows[-1][0] if more else None)
    body = '{"events":[' + ",".join(text for _, text in rows) + '],"next":' + following + "}"
    return HttpResponse(body, content_type="application/json")


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError):
        raise Http404("not a run id") from None
