"""Open sockets whose credential went away are closed: a revoked API token, an ended login
session (logged out, expired, or ended by a password change), a deactivated user; the others
take their user's staff-ness as it is now."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from django.conf import settings

from traces.security import Credential, Standing, standing
from traces.store.pool import pooled

logger = logging.getLogger(__name__)

_standing = pooled(standing)


class Revocable(Protocol):
    """A socket (``traces.consumers.TraceConsumer``)."""

    def revoke(self) -> None: ...

    def stand(self, standing: Standing) -> None: ...


class CredentialWatch:
    """This process's sockets opened with a credential (an API token, a login): every
    ``TRACE_AUTH_RECHECK_SECONDS`` the credentials are checked again, all in a few queries, and the
    sockets whose token was revoked, whose session ended (a password change elsewhere ends it) or
    whose user was deactivated are closed with 4001, also those that only listen; the others see
    what their user sees now (staff or not). (A socket that asks for something is checked then too.)"""

    def __init__(self) -> None:
        self.sockets: dict[Revocable, Credential] = {}
        self.task: asyncio.Task | None = None

    def add(self, socket: Revocable, credential: Credential) -> None:
        self.sockets[socket] = credential
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._watch(), name="credential-watch")

    def remove(self, socket: Revocable) -> None:
        self.sockets.pop(socket, None)

    async def check(self, socket: Revocable, credential: Credential) -> bool:
        """Check one socket's credential now: revoked, or brought up to date; True if it stays."""
        found = await _standing([credential])
        if credential not in found:
            socket.revoke()
            return False
        socket.stand(found[credential])
        return True

    async def _watch(self) -> None:
        while self.sockets:  # ends with the last such socket; the next one starts it again
            await asyncio.sleep(settings.TRACE_AUTH_RECHECK_SECONDS)
            await self.sweep()

    async def sweep(self) -> None:
        watched = list(self.sockets.items())
        try:
            valid = await _standing([credential for _, credential in watched])
        except Exception:
            logger.debug("credential check failed", exc_info=True)
            return
        for socket, credential in watched:
            if credential in valid:
                socket.stand(valid[credential])
            else:
                socket.revoke()

    async def aclose(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
