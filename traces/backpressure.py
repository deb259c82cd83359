"""How many bytes a socket is holding for a client that is not reading them.

daphne (Twisted) never makes an ASGI ``send`` wait: a client that stops reading gets every
message buffered for it in the server's memory, without bound. ASGI offers no way to see
this, so ``SendBuffer`` finds the daphne protocol behind the consumer's ``send`` (daphne
passes ``partial(server.handle_reply, protocol)``, which Channels' session middleware wraps)
and reads its Twisted transport's pending bytes. Under a server where the probe finds
nothing it reports ``None`` and the check is off; uvicorn, for one, makes ``send`` wait for
the socket instead, so a slow client slows only its own consumer.
"""

from __future__ import annotations

import functools
from typing import Any


def _socket_transport(protocol: Any) -> Any | None:
    """The Twisted TCP transport under a protocol (daphne's HTTP channel wraps it once)."""
    try:
        from twisted.internet.abstract import FileDescriptor
    except ImportError:
        return None
    transport = getattr(protocol, "transport", None)
    for _ in range(4):
        if transport is None or isinstance(transport, FileDescriptor):
            return transport
        transport = getattr(transport, "transport", None)
    return None


def _transport(send: Any) -> Any | None:
    for _ in range(6):  # a few layers of wrapping at most
        if isinstance(send, functools.partial):
            for arg in send.args:
                transport = _socket_transport(arg)
                if transport is not None:
                    return transport
            return None
        owner = getattr(send, "__self__", None)
        send = getattr(owner, "real_send", None)
        if send is None:
            return None
    return None


class SendBuffer:
    def __init__(self, send: Any) -> None:
        self.transport = _transport(send)

    @property
    def available(self) -> bool:
        return self.transport is not None

    def pending(self) -> int | None:
        """Bytes written to the socket's transport and not yet taken by the kernel."""
        t = self.transport
        if t is None:
            return None
        return len(t.dataBuffer) - t.offset + getattr(t, "_tempDataLen", 0)

    def abort(self) -> None:
        """Drop the connection now, freeing its buffer (a close frame would wait behind it)."""
        if self.transport is not None:
            self.transport.abortConnection()
