"""Models and migrations work on SQLite and MariaDB, with any Unicode text."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection

from tests.factories import make_trace
from traces.models import Event, Trace


@pytest.mark.django_db
def test_it_has_no_missing_migrations():
    out = io.StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


@pytest.mark.django_db
def test_it_round_trips_chinese_and_emoji():
    text = "显示用户表的10条用户数据 🚀🧪 — ünïcödé 𝔘"
    trace = make_trace(text, final_response="共 10 行 ✅", metadata={"标签": "演示 🎉"})
    stored = Trace.objects.get(pk=trace.pk)
    assert stored.request == text
    assert stored.final_response == "共 10 行 ✅"
    assert stored.metadata == {"model": "builtin", "标签": "演示 🎉"}
    assert Trace.objects.search("用户数据").get() == stored
    assert Trace.objects.search("✅").get() == stored


@pytest.mark.django_db
def test_it_keeps_microseconds():
    trace = make_trace()
    assert Trace.objects.get(pk=trace.pk).started_at == trace.started_at


@pytest.mark.django_db
def test_it_refuses_a_duplicate_seq():
    trace = make_trace()
    with pytest.raises(IntegrityError):
        Event.objects.create(
            trace=trace, seq=1, event_type="trace_started", timestamp=trace.started_at, message_id="x", envelope="{}"
        )


@pytest.mark.django_db
def test_it_filters_through_queryset_methods(django_user_model, settings):
    settings.TRACE_REQUIRE_AUTH = True
    running = make_trace("running one", status=Trace.Status.RUNNING, session_id="s-1")
    done = make_trace("done one", session_id="s-2")
    assert list(Trace.objects.running()) == [running]
    assert list(Trace.objects.finished()) == [done]
    assert list(Trace.objects.for_session("s-2")) == [done]
    owner = django_user_model.objects.create_user("bob")
    other = django_user_model.objects.create_user("carol")
    mine = make_trace("mine", owner=owner)
    assert set(Trace.objects.visible_to(owner)) == {mine}  # unowned traces are staff's
    assert mine not in Trace.objects.visible_to(other)
    settings.TRACE_SHARE_UNOWNED = True
    assert set(Trace.objects.visible_to(owner)) == {running, done, mine}


@pytest.mark.django_db
def test_it_uses_the_configured_backend_settings():
    if connection.vendor == "mysql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@character_set_connection")
            assert cursor.fetchone()[0] == "utf8mb4"
            cursor.execute(
                "SELECT DATETIME_PRECISION FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                "AND TABLE_NAME = 'traces_trace' AND COLUMN_NAME = 'started_at'"
            )
            assert cursor.fetchone()[0] == 6
    else:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode")
            assert cursor.fetchone()[0] == "wal"
