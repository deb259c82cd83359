"""Keyset pagination for the history: any depth costs the same, one indexed range scan."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from django.db.models import Q


@dataclass
class KeysetPage:
    items: list
    next_cursor: str | None
    is_first: bool


def encode(trace) -> str:
    return f"{trace.started_at.isoformat()}~{trace.pk.hex}"


def decode(cursor: str | None) -> tuple[dt.datetime, uuid.UUID] | None:
    try:
        moment, key = (cursor or "").split("~")
        return dt.datetime.fromisoformat(moment), uuid.UUID(key)
    except ValueError:
        return None


def keyset_page(traces, cursor: str | None, size: int) -> KeysetPage:
    """Traces newest first, after ``cursor`` (uses the (started_at, id) index)."""
    position = decode(cursor)
    if position is not None:
        started_at, key = position
        traces = traces.filter(Q(started_at__lt=started_at) | Q(started_at=started_at, id__lt=key))
    items = list(traces.order_by("-started_at", "-id")[: size + 1])
    next_cursor = encode(items[size - 1]) if len(items) > size else None
    return KeysetPage(items[:size], next_cursor, position is None)
