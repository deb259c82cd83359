"""An experiment's figures as the pages show them: shares as percentages, an item's verdict in a word."""

from __future__ import annotations

from django import template

from evals.experiments import verdict as item_verdict

register = template.Library()


@register.filter
def percent(value: float | str | None) -> str:
    """``0.3333`` → ``33.3%``; ``—`` for none (``static/evals/progress.js`` writes it the same way)."""
    return f"{value:.1%}" if isinstance(value, int | float) else "—"


@register.filter
def verdict(passed: bool | None) -> str:
    return item_verdict(passed)
