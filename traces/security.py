"""Who may open the live socket: origins and authentication."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import import_module
from urllib.parse import parse_qs, urlsplit

from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.http.request import split_domain_port, validate_host

from traces.metrics import REJECTED
from traces.models import ApiToken
from traces.proxies import scope_client

logger = logging.getLogger(__name__)


DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(value: str) -> tuple[str, str, int] | None:
    """``scheme://host[:port]`` as (scheme, host, port), the port made explicit; None if it is not one."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        return None
    return parts.scheme, parts.hostname.lower(), port


def _matches(origin: tuple[str, str, int], allowed: tuple[str, str, int]) -> bool:
    scheme, host, port = allowed
    if (origin[0], origin[2]) != (scheme, port):
        return False
    return origin[1] == host or (host.startswith("*.") and origin[1].endswith(host[1:]))


def configured_origins() -> list[tuple[str, str, int]]:
    """TRACE_ALLOWED_ORIGINS (a separately served front end) and CSRF_TRUSTED_ORIGINS."""
    values = list(settings.TRACE_ALLOWED_ORIGINS) + list(settings.CSRF_TRUSTED_ORIGINS)
    return [origin for origin in map(_origin, values) if origin is not None]


def _own_origin(scope: dict, headers: dict[bytes, bytes]) -> tuple[str, str, int] | None:
    """The origin the socket was opened on: its scheme (behind a trusted TLS proxy, as the proxy
    said: ``traces.proxies``), and the Host it was sent to, if that host is one of ALLOWED_HOSTS."""
    host = headers.get(b"host", b"").decode("latin1")
    if settings.USE_X_FORWARDED_HOST and b"x-forwarded-host" in headers:
        host = headers[b"x-forwarded-host"].decode("latin1").split(",")[0].strip()
    scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    origin = _origin(f"{scheme}://{host}") if host else None
    if origin is None:
        return None
    allowed_hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
    domain, _ = split_domain_port(host)
    return origin if domain and validate_host(domain, allowed_hosts) else None


def origin_allowed(scope: dict) -> bool:
    """A browser's socket must come from a page of this very origin (scheme, host and port), or of
    one configured. A request without an Origin header is not from a browser page (a CLI, a
    server, a test client) and cannot be a cross-site request: it goes on to authentication."""
    headers = dict(scope.get("headers") or [])
    raw = headers.get(b"origin")
    if raw is None:
        return True
    origin = _origin(raw.decode("latin1"))
    if origin is None:  # "null" (a sandboxed frame, a file: page) or garbage
        return False
    own = _own_origin(scope, headers)
    if own is not None and _matches(origin, own):
        return True
    return any(_matches(origin, allowed) for allowed in configured_origins())


class OriginCheck:
    """Refuses (HTTP 403) a WebSocket whose Origin is not allowed (``origin_allowed``)."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            REJECTED.labels("origin").inc()
            origin = dict(scope.get("headers") or []).get(b"origin", b"").decode("latin1")
            logger.info(
                "websocket refused: origin %r not allowed for %s client=%s",
                origin[:200],
                scope.get("path", ""),
                scope_client(scope),
            )
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)


def origin_validator(application) -> OriginCheck:
    return OriginCheck(application)


@dataclass(frozen=True)
class Credential:
    """What a socket was let in with, so that it can be checked again later: an API token (by its
    hash) or a logged-in session (by its key), and the user."""

    user_id: int
    token_hash: str = ""
    session_key: str = ""


@database_sync_to_async
def socket_user(scope) -> tuple[object | None, Credential | None]:
    """The logged-in user, else the owner of a valid ``?token=``, else None; and its credential."""
    user = scope.get("user")
    if user is not None and user.is_authenticated:
        session = scope.get("session")
        return user, Credential(user.pk, session_key=getattr(session, "session_key", None) or "")
    query = parse_qs(scope.get("query_string", b"").decode("latin1"))
    key = (query.get("token") or [""])[0]
    user = ApiToken.authenticate(key) if key else None
    return user, (Credential(user.pk, token_hash=ApiToken.hash(key)) if user is not None else None)


@dataclass(frozen=True)
class Standing:
    """What a still valid credential's user may do now: staff-ness is read again at each check."""

    is_staff: bool


def _session_hash_verified(data: dict, user) -> bool:
    """Django's own test (``django.contrib.auth.get_user``): the session's auth hash is the user's
    current one, or one made with a fallback secret. A password change elsewhere changes the hash,
    which ends every other session of that user (``update_session_auth_hash`` keeps only its own)."""
    from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY
    from django.utils.crypto import constant_time_compare

    if str(data.get(SESSION_KEY)) != str(user.pk):
        return False
    session_hash = data.get(HASH_SESSION_KEY)
    if not session_hash:
        return False
    if constant_time_compare(session_hash, user.get_session_auth_hash()):
        return True
    return any(constant_time_compare(session_hash, fallback) for fallback in user.get_session_auth_fallback_hash())


def _live_sessions(keys: set[str]) -> dict[str, dict]:
    """The data of those of the login sessions ``keys`` that have not ended (logged out, expired)."""
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    if not keys:
        return {}
    store = import_module(settings.SESSION_ENGINE).SessionStore
    if settings.SESSION_ENGINE == "django.contrib.sessions.backends.db":
        rows = Session.objects.filter(session_key__in=keys, expire_date__gt=timezone.now())
        return {key: store().decode(data) for key, data in rows.values_list("session_key", "session_data")}
    found = {}
    for key in keys:
        session = store(key)
        data = session.load()
        if session.session_key is not None and data:  # load() forgets a key it did not find
            found[key] = data
    return found


def standing(credentials: list[Credential]) -> dict[Credential, Standing]:
    """Of ``credentials``, those that still let their sockets in, with what their users may do now:
    the token not revoked; the session not ended and still of the user's current password (its auth
    hash, as Django checks it on each request); the user still active. A few queries for any number."""
    from django.contrib.auth import get_user_model

    if not credentials:
        return {}
    users = {
        user.pk: user
        for user in get_user_model()
        .objects.filter(pk__in={c.user_id for c in credentials}, is_active=True)
        .only("pk", "password", "is_staff", "is_active")
    }
    hashes = {c.token_hash for c in credentials if c.token_hash}
    live_tokens = set(ApiToken.objects.active().filter(key_hash__in=hashes).values_list("key_hash", flat=True))
    sessions = _live_sessions({c.session_key for c in credentials if c.session_key})
    valid = {}
    for credential in credentials:
        user = users.get(credential.user_id)
        if user is None:
            continue
        if credential.token_hash and credential.token_hash not in live_tokens:
            continue
        if credential.session_key and not (
            credential.session_key in sessions and _session_hash_verified(sessions[credential.session_key], user)
        ):
            continue
        valid[credential] = Standing(is_staff=user.is_staff)
    return valid


def group_user(user_id: int | None) -> int | None:
    """With auth on, a session belongs to a user (group names include the user); with it off, to nobody."""
    return user_id if settings.TRACE_REQUIRE_AUTH else None


class LoginRequired(LoginRequiredMiddleware):
    """With ``TRACE_REQUIRE_AUTH`` on, every page needs a login (Django's LoginRequiredMiddleware):
    anonymous users are sent to the login page. Views marked ``login_not_required`` stay open: the
    login page itself, ``/health`` and ``/metrics`` (which check their own callers)."""

    def process_view(self, request, view_func, view_args, view_kwargs):
        if not settings.TRACE_REQUIRE_AUTH:
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)
