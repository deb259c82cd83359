"""The commands' --user."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError


def user_id(username: str | None) -> int | None:
    """The id of the user ``username`` (None for none), or a CommandError saying there is no such user."""
    if not username:
        return None
    found = get_user_model().objects.filter(username=username).values_list("pk", flat=True).first()
    if found is None:
        raise CommandError(f"no user named {username!r}")
    return found
