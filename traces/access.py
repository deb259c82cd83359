"""Who may see a trace, who may cancel its run, and which live session a socket or a run is in.

The one rule, used by the socket, the pages, export and the admin: with ``TRACE_REQUIRE_AUTH``
off everyone sees every trace; with it on, nobody sees anything without logging in, staff see
every trace, and other users see their own — and those that have no owner (a ``runagent`` run
without ``--user``) only with ``TRACE_SHARE_UNOWNED``. A user may cancel a run they may see if
it is theirs (or they are staff); with auth off anyone may. ``can_view`` and ``visible_filter``
are the same rule, for one trace and for a query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Q

from traces import protocol


def user_id(user: Any) -> int | None:
    """The id of a logged-in user (or a token's owner); None for anonymous."""
    return user.pk if user is not None and user.is_authenticated else None


def can_view(user: Any, owner_id: int | None) -> bool:
    if not settings.TRACE_REQUIRE_AUTH:
        return True
    if user_id(user) is None:
        return False
    if user.is_staff or user.pk == owner_id:
        return True
    return owner_id is None and settings.TRACE_SHARE_UNOWNED


def can_cancel(user: Any, owner_id: int | None) -> bool:
    if not settings.TRACE_REQUIRE_AUTH:
        return True
    return user_id(user) is not None and (user.is_staff or user.pk == owner_id)


def visible_filter(user: Any, prefix: str = "") -> Q:
    """``can_view`` as a query filter; ``prefix`` reaches the trace from a related model (``"trace__"``)."""
    if not settings.TRACE_REQUIRE_AUTH:
        return Q()
    if user_id(user) is None:
        return Q(pk__in=[])  # nothing
    if user.is_staff:
        return Q()
    own = Q(**{f"{prefix}owner": user.pk})
    return own | Q(**{f"{prefix}owner__isnull": True}) if settings.TRACE_SHARE_UNOWNED else own


@dataclass(frozen=True)
class SessionKey:
    """A live session: the id a client chose, in its owner's namespace when auth is on (another
    user's same id is another session; the traces nobody owns share a namespace of their own),
    shared by everyone when auth is off. A session's sockets see its runs live, and its running
    agent answers cancel_agent from any of them."""

    session_id: str
    owner_id: int | None = None
    namespaced: bool = False

    @classmethod
    def of(cls, session_id: str, owner_id: int | None) -> SessionKey:
        """The session of ``session_id`` for ``owner_id`` (``None``: nobody) under this deployment's auth."""
        if settings.TRACE_REQUIRE_AUTH:
            return cls(session_id, owner_id, namespaced=True)
        return cls(session_id)

    @property
    def group(self) -> str:
        return protocol.session_group(self.session_id, self.owner_id, namespaced=self.namespaced)

    def filter(self, prefix: str = "") -> Q:
        """The traces of this session."""
        q = Q(**{f"{prefix}session_id": self.session_id})
        if self.owner_id is not None:
            q &= Q(**{f"{prefix}owner": self.owner_id})
        elif self.namespaced:
            q &= Q(**{f"{prefix}owner__isnull": True})
        return q
