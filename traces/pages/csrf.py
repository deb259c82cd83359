"""The page of a request that fails CSRF (``CSRF_FAILURE_VIEW``).

With DEBUG off the cookies are ``Secure`` (``DJANGO_SECURE_COOKIES``), and browsers keep such a
cookie only from an HTTPS page (localhost aside). A site reached over plain HTTP on any other host
gets its login refused, for a CSRF cookie that never came back: that page says so and what to
change. Every other failure gets Django's own 403.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import REASON_NO_CSRF_COOKIE
from django.shortcuts import render
from django.views import csrf


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    if reason == REASON_NO_CSRF_COOKIE and settings.CSRF_COOKIE_SECURE and not request.is_secure():
        return render(request, "traces/cookie_refused.html", status=403)
    return csrf.csrf_failure(request, reason)
