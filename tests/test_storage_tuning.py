"""What keeps the history's writes cheap: no index that another one already covers, and a
garbage collector set for a server."""

from __future__ import annotations

import gc

import pytest
from django.db import connection

from traces import gctune
from traces.models import Event, Run


def _indexes(table: str) -> list[tuple[list[str], bool]]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return [(c["columns"], bool(c["unique"])) for c in constraints.values() if c["index"] or c["unique"]]


@pytest.mark.django_db
def test_no_index_of_the_history_repeats_the_start_of_another():
    """Each index is one more B-tree written for every run and every event."""
    for table in (Run._meta.db_table, Event._meta.db_table):
        indexes = _indexes(table)
        columns = [cols for cols, _ in indexes]
        for cols in columns:
            longer = [other for other in columns if other != cols and other[: len(cols)] == cols]
            assert not longer, f"{table}: index on {cols} is covered by {longer}"
    assert (["trace_id", "seq"], True) in _indexes(Event._meta.db_table)
    # A trace's runs in time order, holding the name that a search within the trace checks.
    assert ["trace_id", "start_time", "id", "name"] in [cols for cols, _ in _indexes(Run._meta.db_table)]


def test_the_garbage_collector_is_set_for_a_server():
    before = gc.get_threshold()
    try:
        gctune.tune(0)
        assert gc.get_threshold() == before  # 0: Python's own
        gctune.tune(50_000)
        assert gc.get_threshold() == (50_000, *gctune.OLDER)
        assert gc.get_freeze_count() > 0  # what start-up made is out of the collector's sight
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
