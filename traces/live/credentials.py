"""Open sockets whose credential went away are closed: a revoked API token, an ended login
session, a deactivated user."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from django.conf import settings

from traces.security import Credential, still_valid
from traces.store.pool import pooled

logger = logging.getLogger(__name__)

_still_valid = pooled(still_valid)


class Revocable(Protocol):
    """A socket (``traces.consumers.TraceConsumer``)."""

    def revoke(self) -> None: ...


class CredentialWatch:
    """This process's sockets opened with a credential (an API token, a login): every
    ``TRACE_AUTH_RECHECK_SECONDS`` the credentials are checked again, all in a few queries, and the
    sockets whose token was revoked, whose session ended or whose user was deactivated are closed
    with 4001, also those that only listen. (A socket that asks for something is checked then too.)"""

    def __init__(self) -> None:
        self.sockets: dict[Revocable, Credential] = {}
        self.task: asyncio.Task | None = None

    def add(self, socket: Revocable, credential: Credential) -> None:
        self.sockets[socket] = credential
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._watch(), name="credential-watch")

    def remove(self, socket: Revocable) -> None:
        self.sockets.pop(socket, None)

    async def still_valid(self, credentials: list[Credential]) -> set[Credential]:
        return await _still_valid(credentials)

    async def _watch(self) -> None:
        while self.sockets:  # ends with the last such socket; the next one starts it again
            await asyncio.sleep(settings.TRACE_AUTH_RECHECK_SECONDS)
            await self.sweep()

    async def sweep(self) -> None:
        watched = list(self.sockets.items())
        try:
            valid = await _still_valid([credential for _, credential in watched])
        except Exception:
            logger.debug("credential check failed", exc_info=True)
            return
        for socket, credential in watched:
            if credential not in valid:
                socket.revoke()

    async def aclose(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
