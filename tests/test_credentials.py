"""A socket keeps only the rights its credential still has: a revoked API token, an ended login
session or a deactivated user closes the sockets opened with it (4001), at its next action and,
for a socket that only listens, at the next periodic check."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.backends.db import SessionStore
from django.utils import timezone

from tests.live import connect, receive, receive_until, send
from traces.models import ApiToken

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("configured_agent_db")]


@pytest.fixture
def auth_on(settings):
    settings.TRACE_REQUIRE_AUTH = True


async def opened(path: str, headers: list | None = None):
    communicator = connect(path, headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    assert (await receive(communicator))["event_type"] == "connection_established"
    return communicator


async def closed_with(communicator, timeout: float = 5) -> int | None:
    while True:
        output = await communicator.receive_output(timeout)
        if output["type"] == "websocket.close":
            return output.get("code")


def login_session(user) -> str:
    """A login session of ``user``, as ``django.contrib.auth.login`` leaves one."""
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    return session.session_key


async def token_for(django_user_model, name: str) -> tuple[ApiToken, str]:
    user = await sync_to_async(django_user_model.objects.create_user)(name)
    return await sync_to_async(ApiToken.issue)(user, "cli")


@pytest.mark.usefixtures("auth_on")
async def test_a_revoked_token_closes_its_socket_at_its_next_action(django_user_model, settings):
    settings.TRACE_AUTH_RECHECK_SECONDS = 3600  # only the action's own check
    token, key = await token_for(django_user_model, "rita")
    communicator = await opened(f"/ws/revoke?token={key}")
    await send(communicator, action="subscribe_all")
    await send(communicator, action="ping")
    assert (await receive(communicator))["event_type"] == "pong"
    await ApiToken.objects.filter(pk=token.pk).aupdate(revoked_at=timezone.now())
    await send(communicator, action="start_agent", question="how many users?")
    assert await closed_with(communicator) == 4001
    assert not await sync_to_async(lambda: token.user.traces.exists())()  # nothing started with it
    await communicator.disconnect()


@pytest.mark.usefixtures("auth_on")
async def test_a_socket_that_only_listens_is_closed_when_its_token_is_revoked(django_user_model, settings):
    settings.TRACE_AUTH_RECHECK_SECONDS = 0.2
    _, kept_key = await token_for(django_user_model, "kim")
    revoked, revoked_key = await token_for(django_user_model, "ray")
    keeps = await opened(f"/ws/keeps?token={kept_key}")
    listens = await opened(f"/ws/listens?token={revoked_key}")
    await ApiToken.objects.filter(pk=revoked.pk).aupdate(revoked_at=timezone.now())
    assert await closed_with(listens) == 4001
    assert await keeps.receive_nothing(0.6)  # a valid token's socket stays
    await send(keeps, action="ping")
    assert (await receive(keeps))["event_type"] == "pong"
    await keeps.disconnect()
    await listens.disconnect()


@pytest.mark.usefixtures("auth_on")
async def test_a_logged_out_session_and_a_deactivated_user_close_their_sockets(django_user_model, settings):
    settings.TRACE_AUTH_RECHECK_SECONDS = 0.2
    user = await sync_to_async(django_user_model.objects.create_user)("lou", password="pw-lou-12345")

    session_key = await sync_to_async(login_session)(user)
    browser = await opened("/ws/browser", headers=[(b"cookie", f"sessionid={session_key}".encode())])
    await sync_to_async(SessionStore(session_key).delete)()  # logged out (elsewhere)
    assert await closed_with(browser) == 4001
    await browser.disconnect()

    _, key = await sync_to_async(ApiToken.issue)(user, "cli")
    cli = await opened(f"/ws/cli?token={key}")
    await django_user_model.objects.filter(pk=user.pk).aupdate(is_active=False)
    assert await closed_with(cli) == 4001
    await cli.disconnect()


def change_password(user, kept_session: str) -> None:
    """As Django's password change view does: the new password's hash kept in the session it was
    changed in (``update_session_auth_hash``); the user's other sessions keep the old one."""
    user.set_password("new-password-456")
    user.save()
    session = SessionStore(kept_session)
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.save()


@pytest.mark.usefixtures("auth_on")
async def test_a_password_change_closes_another_sessions_socket_at_its_next_action(django_user_model, settings):
    settings.TRACE_AUTH_RECHECK_SECONDS = 3600  # only the action's own check
    user = await sync_to_async(django_user_model.objects.create_user)("pat", password="old-password-123")
    here, elsewhere = await sync_to_async(login_session)(user), await sync_to_async(login_session)(user)
    kept = await opened("/ws/here", headers=[(b"cookie", f"sessionid={here}".encode())])
    other = await opened("/ws/elsewhere", headers=[(b"cookie", f"sessionid={elsewhere}".encode())])
    await sync_to_async(change_password)(user, here)
    await send(other, action="subscribe_all")
    assert await closed_with(other) == 4001  # its session row is still there, with the old password's hash
    await send(kept, action="subscribe_all")
    await send(kept, action="ping")
    assert (await receive(kept))["event_type"] == "pong"
    await kept.disconnect()
    await other.disconnect()


@pytest.mark.usefixtures("auth_on")
async def test_a_password_change_closes_another_sessions_listening_socket(django_user_model, settings):
    settings.TRACE_AUTH_RECHECK_SECONDS = 0.2
    user = await sync_to_async(django_user_model.objects.create_user)("pia", password="old-password-123")
    here, elsewhere = await sync_to_async(login_session)(user), await sync_to_async(login_session)(user)
    kept = await opened("/ws/here", headers=[(b"cookie", f"sessionid={here}".encode())])
    listens = await opened("/ws/elsewhere", headers=[(b"cookie", f"sessionid={elsewhere}".encode())])
    await sync_to_async(change_password)(user, here)
    assert await closed_with(listens) == 4001
    assert await kept.receive_nothing(0.6)
    await send(kept, action="ping")
    assert (await receive(kept))["event_type"] == "pong"
    await kept.disconnect()
    await listens.disconnect()


@pytest.mark.usefixtures("auth_on")
async def test_a_staff_user_demoted_while_connected_stops_seeing_others_traces(django_user_model, settings):
    settings.TRACE_AUTH_RECHECK_SECONDS = 0.2
    staff = await sync_to_async(django_user_model.objects.create_user)("stella", is_staff=True)
    worker = await sync_to_async(django_user_model.objects.create_user)("wes")
    _, staff_key = await sync_to_async(ApiToken.issue)(staff, "cli")
    _, worker_key = await sync_to_async(ApiToken.issue)(worker, "cli")
    watcher = await opened(f"/ws/watch?token={staff_key}")
    await send(watcher, action="subscribe_all")
    runner = await opened(f"/ws/work?token={worker_key}")

    async def a_run_seen_by_the_watcher() -> bool:
        await send(runner, action="start_agent", question="how many users?")
        await receive_until(runner, "trace_completed")
        try:
            await receive_until(watcher, "trace_completed", timeout=2)
        except TimeoutError:
            return False
        return True

    assert await a_run_seen_by_the_watcher()  # staff sees everyone's traces
    await django_user_model.objects.filter(pk=staff.pk).aupdate(is_staff=False)
    await asyncio.sleep(0.6)  # a periodic check or two
    assert not await a_run_seen_by_the_watcher()
    await watcher.disconnect()
    await runner.disconnect()
