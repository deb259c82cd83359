"""Numbers as the pages show them: thousands grouped, a few decimals, costs in dollars, durations.

Database aggregates come back as long floats (``3098082.8100000042``) or as decimals with all
their places (``0.00012300``); these filters round them for reading. ``static/traces/dashboard.js``
formats the charts' values the same way.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def number(value: int | float | Decimal | None, decimals: int = 2) -> str:
    """``3098082.8100000042`` → ``3,098,082.81``; whole numbers without decimals."""
    if value is None or value == "":
        return ""
    if isinstance(value, int) or value == int(value):
        return f"{int(value):,}"
    text = f"{value:,.{int(decimals)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


@register.filter
def cost(value: float | Decimal | None) -> str:
    """Dollars: cents from $1 up, four places below, ``<$0.0001`` for less that is not nothing."""
    if value is None or value == "":
        return ""
    amount = float(value)
    if amount == 0:
        return "$0"
    if abs(amount) >= 1:
        return f"${amount:,.2f}"
    if abs(amount) >= 0.0001:
        return f"${amount:.4f}"
    return "<$0.0001"


@register.filter
def duration(value: timedelta | None) -> str:
    """A length of time in its largest whole units: ``15 minutes``, ``1 hour 30 minutes``, ``45 seconds``."""
    if value is None or value == "":
        return ""
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return " ".join(parts[:2]) or "0 seconds"


@register.filter
def milliseconds(value: int | float | str | None) -> str:
    """A duration given in milliseconds in its largest sensible unit, as ``static/traces/render.js``
    ``formatDuration`` writes it: ``<1 ms``, ``840 ms``, ``1.24 s``, ``30.0 s``, ``2 min 5 s``."""
    if value is None or value == "":
        return ""
    ms = float(value)
    if ms < 1:
        return "<1 ms"
    if ms < 1000:
        return f"{round(ms)} ms"
    if ms < 60000:
        return f"{ms / 1000:.{2 if ms < 10000 else 1}f} s"
    return f"{int(ms // 60000)} min {round((ms % 60000) / 1000)} s"
