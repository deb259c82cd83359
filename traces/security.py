"""Who may open the live socket: origins and authentication."""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.security.websocket import OriginValidator
from django.conf import settings

from traces.models import ApiToken


class TraceOriginValidator(OriginValidator):
    """Browsers must come from ALLOWED_HOSTS or TRACE_ALLOWED_ORIGINS.

    A request without an Origin header is not from a browser page (a CLI, a server, a test
    client) and cannot be a cross-site request, so it is let through to authentication.
    """

    def valid_origin(self, parsed_origin) -> bool:
        if parsed_origin is None:
            return True
        return super().valid_origin(parsed_origin)


def allowed_origins() -> list[str]:
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts + list(settings.TRACE_ALLOWED_ORIGINS)


def origin_validator(application) -> TraceOriginValidator:
    return TraceOriginValidator(application, allowed_origins())


@database_sync_to_async
def socket_user(scope) -> object | None:
    """The logged-in user, else the owner of a valid ``?token=``, else None."""
    user = scope.get("user")
    if user is not None and user.is_authenticated:
        return user
    query = parse_qs(scope.get("query_string", b"").decode("latin1"))
    key = (query.get("token") or [""])[0]
    return ApiToken.authenticate(key) if key else None


def group_user(user_id: int | None) -> int | None:
    """With auth on, a session belongs to a user (group names include the user); with it off, to nobody."""
    return user_id if settings.TRACE_REQUIRE_AUTH else None
