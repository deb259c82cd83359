"""The ASGI lifespan for servers that send it (uvicorn): drain on shutdown, as daphne does through
``traces.compat.on_server_shutdown``."""

from __future__ import annotations

from typing import Any


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    from traces.live import serve, shutdown

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await serve()  # beat as a runner and reap interrupted runs from the start
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
