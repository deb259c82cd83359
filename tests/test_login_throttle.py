"""Failed logins are throttled per username and client address (django-axes): after
AXES_FAILURE_LIMIT of them even the right password is refused, with a page saying why, until the
cool-off has passed; the address is the one traces.proxies trusts, never a header's say-so."""

from __future__ import annotations

import logging
import re
import time
from datetime import timedelta
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import pytest
from channels.testing import HttpCommunicator
from django.urls import reverse

from tracesite.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "right-pass-4471"
PROXY, OUTSIDER, NEIGHBOUR = "192.0.2.10", "203.0.113.9", "198.51.100.7"


@pytest.fixture
def throttle(settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # many logins, quickly


@pytest.fixture
def vera(throttle, django_user_model):
    django_user_model.objects.create_user("vera", password=PASSWORD)
    django_user_model.objects.create_user("otto", password=PASSWORD)


def log_in(client, username: str, password: str, address: str = "127.0.0.1"):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address)


def locked_out(response) -> bool:
    return response.status_code == 429 and b"data-locked-out" in response.content


def fail(client, times: int, username: str = "vera", address: str = "127.0.0.1") -> None:
    for _ in range(times):
        response = log_in(client, username, "wrong", address)
        assert response.status_code in (200, 429) and "_auth_user_id" not in client.session


def test_it_refuses_the_right_password_after_too_many_wrong_ones_and_says_why(client, vera):
    fail(client, 2)
    assert log_in(client, "vera", "wrong").status_code == 429  # the third failure locks
    refused = log_in(client, "vera", PASSWORD)
    assert locked_out(refused) and "_auth_user_id" not in client.session
    page = refused.content.decode()
    assert "Too many failed logins" in page and "failed 3 times" in page and "15 minutes" in page
    assert client.get(reverse("login")).status_code == 200  # the page itself still opens


def test_below_the_limit_the_right_password_logs_in(client, vera):
    fail(client, 2)
    assert log_in(client, "vera", PASSWORD).status_code == 302


def test_another_user_and_another_address_are_not_locked_out(client, vera):
    fail(client, 3)
    assert locked_out(log_in(client, "vera", PASSWORD))
    assert log_in(client, "vera", PASSWORD, address=NEIGHBOUR).status_code == 302  # vera elsewhere
    client.logout()
    assert log_in(client, "otto", PASSWORD).status_code == 302  # somebody else at the same address


def test_after_the_cool_off_the_right_password_logs_in_again(client, vera, settings):
    settings.AXES_COOLOFF_TIME = timedelta(seconds=1)
    fail(client, 3)
    assert locked_out(log_in(client, "vera", PASSWORD))
    time.sleep(1.2)
    assert log_in(client, "vera", PASSWORD).status_code == 302


def test_the_lockout_page_escapes_the_username(client, throttle):
    name = "<script>alert(1)</script>"
    fail(client, 3, username=name)
    page = log_in(client, name, "wrong").content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and name not in page


class Browser:
    """One browser's cookies, through the server's whole ASGI application, connected from ``peer``."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.cookies: dict[str, str] = {}

    async def request(self, method: str, path: str, body: bytes = b"", **headers: str) -> dict:
        sent = [(b"host", b"localhost"), *((k.replace("_", "-").encode(), v.encode()) for k, v in headers.items())]
        if self.cookies:
            sent.append((b"cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()).encode()))
        if method == "POST":
            sent.append((b"content-type", b"application/x-www-form-urlencoded"))
        communicator = HttpCommunicator(application, method, path, body=body, headers=sent)
        communicator.scope["client"] = [self.peer, 40000]
        response = await communicator.get_response(timeout=30)
        for name, value in response["headers"]:
            if name.lower() == b"set-cookie":
                self.cookies.update({k: m.value for k, m in SimpleCookie(value.decode()).items()})
        return response

    async def log_in(self, username: str, password: str, **headers: str) -> dict:
        page = await self.request("GET", "/accounts/login/", **headers)
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page["body"])
        assert token is not None
        form = {"csrfmiddlewaretoken": token.group(1).decode(), "username": username, "password": password}
        response = await self.request("POST", "/accounts/login/", urlencode(form).encode(), **headers)
        assert response["status"] != 403, response["body"][:500]  # CSRF passed
        return response


async def test_a_forged_forwarded_for_does_not_evade_the_lockout(vera, caplog):
    caplog.set_level(logging.INFO, logger="axes")
    browser = Browser(OUTSIDER)
    for attempt in range(3):  # a new address each time, in a header nobody trusts
        await browser.log_in("vera", "wrong", x_forwarded_for=f"10.0.0.{attempt}")
    refused = await browser.log_in("vera", PASSWORD, x_forwarded_for="10.0.0.99")
    assert refused["status"] == 429 and b"data-locked-out" in refused["body"]
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("axes")]
    assert any("Locking out" in line and OUTSIDER in line for line in logged)
    assert not any("10.0.0." in line for line in logged)


async def test_behind_a_trusted_proxy_the_client_it_forwards_is_the_one_locked_out(vera, settings):
    settings.TRACE_TRUSTED_PROXIES = [PROXY]
    behind = Browser(PROXY)
    for attempt in range(3):  # what the client writes left of the proxy's entry changes nothing
        await behind.log_in("vera", "wrong", x_forwarded_for=f"10.0.0.{attempt}, {OUTSIDER}")
    assert (await behind.log_in("vera", PASSWORD, x_forwarded_for=OUTSIDER))["status"] == 429
    assert (await Browser(PROXY).log_in("vera", PASSWORD, x_forwarded_for=NEIGHBOUR))["status"] == 302
