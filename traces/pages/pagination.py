"""Pages of the history, each with the same "page n of m · N traces" whatever the order.

Newest first (the default) pages by keyset: a page after (or before) a cursor is one indexed range
scan, as fast at the 2,000th page as at the first. The other orders page by number (OFFSET), which
a jump to any page needs. Both count the matching traces with one count that stops at
``COUNT_LIMIT``: past it the page says "10,000+ traces", and the count costs no more than
reading that many index entries, however many traces there are.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from dataclasses import dataclass
from urllib.parse import urlencode

from django.db.models import Q

COUNT_LIMIT = 10_000
# A page number is at most this: more pages than any history has, and its OFFSET still fits
# every database's integers (a larger one was a 500).
MAX_PAGE = 1_000_000_000


@dataclass(frozen=True)
class Total:
    count: int
    more: bool  # more than ``count`` traces match (the count stopped at COUNT_LIMIT)


def bounded_count(traces, limit: int | None = None) -> Total:
    """How many traces match, counting no further than ``limit`` (COUNT_LIMIT)."""
    limit = COUNT_LIMIT if limit is None else limit
    counted = traces.order_by()[: limit + 1].count()
    return Total(min(counted, limit), counted > limit)


def total_of(traces, first_page: list | None, size: int) -> Total:
    """The count, unless the first page, when it is the one shown and not full, says it already
    (a rare search term: the page scanned everything once, the count need not again)."""
    if first_page is not None and len(first_page) <= size:
        return Total(len(first_page), False)
    return bounded_count(traces)


@dataclass
class Page:
    items: list
    number: int
    size: int
    total: Total
    next_link: str | None  # the query parameters of the next page (older, when newest first)
    previous_link: str | None
    is_first: bool
    search_capped: bool = False  # the search read the most matches it reads from the index: more may match

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total.count / self.size))


def encode(trace) -> str:
    return f"{trace.started_at.isoformat()}~{trace.pk.hex}"


def decode(cursor: str | None) -> tuple[dt.datetime, uuid.UUID] | None:
    try:
        moment, key = (cursor or "").split("~")
        return dt.datetime.fromisoformat(moment), uuid.UUID(key)
    except ValueError:
        return None


def page_number(value: str | None) -> int:
    """``?page=``: 1 for anything that is not a number, at most ``MAX_PAGE``."""
    try:
        return min(MAX_PAGE, max(1, int(value or 1)))
    except ValueError:
        return 1


def keyset_page(
    traces,
    *,
    after: str | None,
    before: str | None,
    number: int,
    size: int,
    search: str = "",
    total: Total | None = None,
) -> Page:
    """Traces newest first (the (started_at, id) index): the page older than the ``after`` cursor,
    or the page newer than the ``before`` cursor, or else the first page. ``number`` is carried in
    the links only to say which page this is. ``total``, when the caller has counted already,
    saves the count.

    With a ``search`` term the traces are the history's (``TraceQuerySet.search_page`` finds the
    page's matches) and they are not counted: the page says how many it has seen, and "+" when
    there are more (counting every match of a common term would cost more than the page)."""
    older, newer = decode(after), decode(before)
    partial = False
    if newer is not None:
        started_at, key = newer
        after_cursor = Q(started_at__gt=started_at) | Q(started_at=started_at, id__gt=key)
        rows, partial = _rows(traces.filter(after_cursor), size + 1, search, oldest_first=True)
        has_newer, has_older = len(rows) > size, True
        items = rows[:size][::-1]
    else:
        page = traces
        if older is not None:
            started_at, key = older
            page = traces.filter(Q(started_at__lt=started_at) | Q(started_at=started_at, id__lt=key))
        rows, partial = _rows(page, size + 1, search, oldest_first=False)
        has_newer, has_older = older is not None, len(rows) > size
        items = rows[:size]
    if search:
        if not has_newer:
            total = Total(len(items), has_older or partial)
        else:
            number = max(2, number)
            total = Total((number - 1) * size + len(items), True)
    elif total is None:
        total = total_of(traces, rows if older is None and newer is None else None, size)
    if not has_newer:
        number = 1
    elif not total.more:
        number = min(number, max(2, math.ceil(total.count / size)))
    next_link = previous_link = None
    if has_older and items:
        next_link = urlencode({"after": encode(items[-1]), "page": number + 1})
    if has_newer and items:
        # The second page's newer neighbour is the first page: a link without a cursor.
        previous_link = urlencode({"before": encode(items[0]), "page": number - 1}) if number > 2 else ""
    return Page(items, number, size, total, next_link, previous_link, not has_newer, partial)


def _rows(traces, size: int, search: str, *, oldest_first: bool) -> tuple[list, bool]:
    if search:
        return traces.search_page(search, size, oldest_first=oldest_first)
    order = ("started_at", "id") if oldest_first else ("-started_at", "-id")
    return list(traces.order_by(*order)[:size]), False


def numbered_page(traces, number: int, size: int) -> Page:
    """Page ``number`` of ``traces`` in their own order (OFFSET); past the last page, the last page.
    When the count stopped at ``COUNT_LIMIT`` the last page is not known: a page past it has no items."""
    total: Total | None = None
    if number > 1:
        total = bounded_count(traces)
        if not total.more:
            number = min(number, max(1, math.ceil(total.count / size)))
    rows = list(traces[(number - 1) * size : number * size + 1])
    if total is None:
        total = total_of(traces, rows, size)
    next_link = urlencode({"page": number + 1}) if len(rows) > size else None
    previous_link = urlencode({"page": number - 1}) if number > 1 else None
    return Page(rows[:size], number, size, total, next_link, previous_link, number == 1)
