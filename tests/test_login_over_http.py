"""A login refused because the browser dropped the Secure CSRF cookie on a plain-HTTP site says why.

Browsers do not store a ``Secure`` cookie sent over plain HTTP (localhost aside), so the login
POST comes without it and fails CSRF; the page then says what to change instead of Django's
generic 403.
"""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

HINT = "DJANGO_SECURE_COOKIES=false"


@pytest.fixture
def secure_cookies(settings):
    """DEBUG off's default (``DJANGO_SECURE_COOKIES`` unset)."""
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    return settings


def log_in(**extra) -> object:
    """A login POST as from a browser that kept no CSRF cookie."""
    browser = Client(enforce_csrf_checks=True)
    return browser.post("/accounts/login/", {"username": "alice", "password": "pw"}, **extra)


def test_it_says_the_cookies_are_secure_when_the_cookie_was_refused_over_plain_http(secure_cookies):
    response = log_in()
    assert response.status_code == 403
    page = response.content.decode()
    assert "Secure" in page and "HTTPS" in page and HINT in page
    assert "{{" not in page and "<script" not in page


def test_over_https_a_refused_login_gets_the_usual_403(secure_cookies):
    response = log_in(secure=True, HTTP_REFERER="https://testserver/accounts/login/")
    assert response.status_code == 403 and "CSRF verification failed" in response.content.decode()
    assert HINT not in response.content.decode()


def test_with_cookies_not_secure_a_refused_login_gets_the_usual_403(secure_cookies):
    secure_cookies.CSRF_COOKIE_SECURE = False
    response = log_in()
    assert response.status_code == 403 and HINT not in response.content.decode()


def test_a_stale_token_with_the_cookie_present_gets_the_usual_403(secure_cookies):
    browser = Client(enforce_csrf_checks=True)
    browser.get("/accounts/login/")  # the cookie is set
    response = browser.post(
        "/accounts/login/", {"username": "alice", "password": "pw", "csrfmiddlewaretoken": "x" * 64}
    )
    assert response.status_code == 403 and HINT not in response.content.decode()
