"""What ``/health`` checks, and who may see the details of it and ``/metrics``.

- ``database``: the history database answers a read of the events table within
  ``CHECK_SECONDS``, and (SQLite) its write lock can be taken: a table locked by another client
  (``LOCK TABLES … WRITE``, a long ``BEGIN EXCLUSIVE``) stops every run's events, so it makes the
  service unhealthy. The probe runs on a thread of its own; checks that come while it runs wait
  for the same probe, and once it has waited ``CHECK_SECONDS`` they say so instead of queueing.
- ``history_writer``: this process's event store has no batch waiting on the database for longer
  than ``CHECK_SECONDS`` and its last write did not fail.
- ``channel_layer``: a round trip through the layer; without it the service is degraded (events
  are still stored; other processes' sockets catch up from the database).
- ``model``: the last call to the model endpoint answered; a failure (unreachable, a refused key,
  429/5xx after the client's retries) makes the service degraded until a call succeeds.

The details also list ``warnings`` that do not change the status: the grants of the agent's
database user beyond reading its own schema (writing, FILE, PROCESS, SUPER, other schemas), read
from ``SHOW GRANTS`` on MySQL/MariaDB (``SqlDatabase.privilege_problems``, cached for the schema's
time to live).

Anybody gets the overall status and its HTTP code, which is what a load balancer needs: 200 while
the service serves (healthy or degraded), 503 when it is unhealthy. A server that could not
render its pages (static files not collected) does not start at all (``traces.checks``), so it
never answers here. The details and ``/metrics`` are for monitoring: allowed with DEBUG on, for a
logged-in staff user, for ``Authorization: Bearer`` with ``TRACE_METRICS_TOKEN`` or a staff user's
API token, and for clients whose address is in ``TRACE_MONITORING_IPS`` (behind proxies, as
trusted ones forwarded it: ``traces.proxies``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets
import threading
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection
from django.http import HttpRequest

from agents.chat import ENDPOINT_HEALTH
from agents.config import BUILTIN, agent_database, model_label
from agents.database import QueryError
from traces.live.layer import configured_layer
from traces.models import ApiToken, Event
from traces.proxies import in_networks
from traces.runtime import all_runtimes

CHECK_SECONDS = 2.0

_probe: concurrent.futures.Future | None = None
_probe_started = 0.0


def _probe_database() -> str:
    close_old_connections()
    try:
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                cursor.execute(f"PRAGMA busy_timeout = {int(CHECK_SECONDS * 1000)}")
            elif connection.vendor == "mysql":
                # LOCK TABLES waits on a metadata lock, row locks on InnoDB's: give up on both in time.
                seconds = max(1, int(CHECK_SECONDS))
                cursor.execute(f"SET SESSION lock_wait_timeout = {seconds}, innodb_lock_wait_timeout = {seconds}")
            cursor.execute(f"SELECT 1 FROM {Event._meta.db_table} LIMIT 1")
            if connection.vendor == "sqlite":  # WAL readers pass a writer: ask for the write lock itself
                cursor.execute("BEGIN IMMEDIATE")
                cursor.execute("ROLLBACK")
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure makes the service unhealthy, and says why
        return f"error: {exc}"
    finally:
        close_old_connections()


def _in_a_thread(probe: Any) -> concurrent.futures.Future:
    """Run one probe on a thread of its own, which ends with it: a probe that hangs on a locked
    table keeps nothing else waiting, and no pool outlives the process's runtime."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(probe())
        except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the probe
            future.set_exception(exc)

    threading.Thread(target=run, name="health-probe", daemon=True).start()
    return future


async def check_database() -> str:
    """Concurrent checks share one probe; a probe still waiting after ``CHECK_SECONDS`` is an answer."""
    global _probe, _probe_started
    if _probe is None or _probe.done():
        _probe, _probe_started = _in_a_thread(_probe_database), time.monotonic()
    waited = time.monotonic() - _probe_started
    if waited >= CHECK_SECONDS:
        return f"error: the database has not answered for {waited:.0f} s (locked?)"
    try:
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(_probe)), CHECK_SECONDS - waited + 0.5)
    except TimeoutError:
        return f"error: the database did not answer within {CHECK_SECONDS:g} s (locked or overloaded)"


def check_history_writer() -> str:
    now = time.monotonic()
    for store in (runtime.store for runtime in all_runtimes()):
        if not store.store_ok:
            return "error: the last write of trace history failed"
        if store.writing_since is not None and now - store.writing_since > CHECK_SECONDS:
            return f"error: a batch of trace history has waited {now - store.writing_since:.0f} s for the database"
    return "ok"


async def check_channel_layer() -> str:
    layer = configured_layer()
    if layer is None:
        return "error: no channel layer configured"
    return await layer.check()


def check_model() -> str:
    if ENDPOINT_HEALTH.last_error:
        return f"error: {ENDPOINT_HEALTH.last_error} ({time.time() - (ENDPOINT_HEALTH.last_error_at or 0):.0f} s ago)"
    return "ok" if ENDPOINT_HEALTH.last_ok is not None or model_label() == BUILTIN else "not called yet"


async def checks() -> tuple[str, dict[str, Any]]:
    """The overall status and each check's result."""
    database, layer = await asyncio.gather(check_database(), check_channel_layer())
    results = {
        "database": database,
        "history_writer": check_history_writer(),
        "channel_layer": layer,
        "model": check_model(),
    }
    if results["database"] != "ok" or results["history_writer"] != "ok":
        return "unhealthy", results
    if results["channel_layer"] != "ok" or results["model"].startswith("error"):
        return "degraded", results
    return "healthy", results


async def warnings() -> list[str]:
    """For the details only: reading the grants is a query to the agent's database."""
    try:
        future = _in_a_thread(lambda: agent_database().privilege_problems())
        return list(await asyncio.wait_for(asyncio.wrap_future(future), CHECK_SECONDS))
    except QueryError as exc:
        return [f"cannot check the agent's database user: {exc}"]
    except TimeoutError:
        return [f"cannot check the agent's database user: no answer within {CHECK_SECONDS:g} s"]


# ---------------------------------------------------------------------------- who may see the details


def _address_allowed(request: HttpRequest) -> bool:
    return in_networks(request.META.get("REMOTE_ADDR", ""), settings.TRACE_MONITORING_IPS)


def _bearer(request: HttpRequest) -> str:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


def _token_allowed(key: str) -> bool:
    if not key:
        return False
    if settings.TRACE_METRICS_TOKEN and secrets.compare_digest(key.encode(), settings.TRACE_METRICS_TOKEN.encode()):
        return True
    user = ApiToken.authenticate(key)
    return user is not None and user.is_staff


async def monitoring_allowed(request: HttpRequest) -> bool:
    if settings.DEBUG or _address_allowed(request):
        return True
    key = _bearer(request)
    if key:
        return await sync_to_async(_token_allowed)(key)
    user = await request.auser()
    return bool(user.is_authenticated and user.is_staff)
