"""seeddemo fills the agent's database with the deterministic demo shop, once."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.db import connections

from agents import demo
from evals.demo import ITEMS as DEMO_ITEMS
from evals.models import Dataset


def test_it_builds_the_same_data_every_time():
    first, second = demo.rows(), demo.rows()
    assert first == second
    assert [u[1] for u in first["users"][:3]] == ["Alice", "Bob", "Charlie"]
    assert len(first["users"]) == 300 and len(first["orders"]) == 2000 and len(first["order_items"]) > 4000


def test_it_seeds_the_configured_agent_database_idempotently(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        first = io.StringIO()
        call_command("seeddemo", "--force", stdout=first)
        out = io.StringIO()
        call_command("seeddemo", stdout=out)
        assert "already present" in out.getvalue()
        # and the demo dataset, in Django's database, once
        assert "Dataset 'demo-shop' created" in first.getvalue() and "demo-shop" not in out.getvalue()
        assert Dataset.objects.get(name="demo-shop").items.count() == len(DEMO_ITEMS) >= 20
        Dataset.objects.filter(name="demo-shop").delete()  # outside a test transaction: not rolled back
        with connections["agent"].cursor() as cursor:
            cursor.execute("SELECT name FROM users WHERE id = 1")
            assert cursor.fetchone()[0] == "Alice"
            cursor.execute("SELECT COUNT(*) FROM orders")
            assert cursor.fetchone()[0] == 2000
        assert connections["agent"].settings_dict["NAME"] != connections["default"].settings_dict["NAME"]


def test_it_refuses_to_overwrite_a_partial_schema(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        call_command("seeddemo", "--force", stdout=io.StringIO())
        with connections["agent"].cursor() as cursor:
            cursor.execute("DROP TABLE order_items")
        with pytest.raises(CommandError, match="--force"):
            call_command("seeddemo", stdout=io.StringIO())
        call_command("seeddemo", "--force", stdout=io.StringIO())
        Dataset.objects.filter(name="demo-shop").delete()
