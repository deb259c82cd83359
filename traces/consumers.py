"""The live trace WebSocket: ``ws://HOST/ws/<session_id>``; see PROTOCOL.md."""

from __future__ import annotations

import logging
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from traces import protocol
from traces.protocol import Action, ClientMessage, CloseCode, ErrorCode, EventType, ProtocolError

logger = logging.getLogger(__name__)


class TraceConsumer(AsyncWebsocketConsumer):
    session_id: str = ""

    async def connect(self) -> None:
        self.session_id = self.scope["url_route"]["kwargs"]["session_id"]
        if not protocol.SESSION_ID_RE.fullmatch(self.session_id):
            await self.close(code=CloseCode.INVALID_SESSION)
            return
        self.group = protocol.session_group(self.session_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        logger.info("websocket connected session=%s", self.session_id)
        await self.send_event(
            EventType.CONNECTION_ESTABLISHED,
            {"status": "connected", "session_id": self.session_id, "active_trace_id": None, "last_seq": 0,
             "server_version": protocol.SERVER_VERSION},
        )

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)
            logger.info("websocket closed session=%s code=%s", self.session_id, code)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            message = protocol.parse_client_message(text_data, bytes_data)
            await self.dispatch_action(message)
        except ProtocolError as exc:
            await self.send_event(EventType.ERROR, {"error": str(exc.error), "detail": exc.detail})

    async def dispatch_action(self, message: ClientMessage) -> None:
        if message.action == Action.PING:
            await self.send_event(EventType.PONG, {"client_time": message.fields["client_time"]})
            return
        raise ProtocolError(f"action {message.action} is not available on this server", ErrorCode.INVALID_MESSAGE)

    async def send_event(self, event_type: EventType, data: dict[str, Any]) -> None:
        await self.send(text_data=protocol.dumps(protocol.envelope(event_type, data, session_id=self.session_id)))

    async def trace_event(self, message: dict[str, Any]) -> None:
        await self.send(text_data=message["text"])
