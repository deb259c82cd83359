"""Helpers for the live-service tests: a communicator on the real ASGI stack, reading until an event."""

from __future__ import annotations

import asyncio
import json

from channels.testing import WebsocketCommunicator

from tracesite.asgi import application


def connect(path: str = "/ws/session_xyz789", headers: list | None = None) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=headers or [])


async def receive(communicator: WebsocketCommunicator, timeout: float = 10) -> dict:
    return json.loads(await communicator.receive_from(timeout=timeout))


async def receive_until(
    communicator: WebsocketCommunicator, event_type: str, timeout: float = 30, **match
) -> list[dict]:
    """Every message up to and including the first ``event_type`` whose data matches ``match``."""
    messages = []
    async with asyncio.timeout(timeout):
        while True:
            message = await receive(communicator, timeout)
            messages.append(message)
            if message["event_type"] == event_type and all(message["data"].get(k) == v for k, v in match.items()):
                return messages


async def send(communicator: WebsocketCommunicator, **message) -> None:
    await communicator.send_to(text_data=json.dumps(message))
