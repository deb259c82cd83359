"""WhiteNoise's static files, served by a middleware that runs on the event loop.

WhiteNoise's own middleware is synchronous only. One synchronous middleware in an ASGI
server's stack makes Django run the whole chain in a thread: every request (a history page, the
health check, the metrics) would hop to a worker thread for the middleware and back to the event
loop for the view.

This one is both: under ASGI it answers a static file from WhiteNoise's table (a dict lookup; the
file is streamed by Django's response) and passes every other request on without leaving the
loop; under WSGI it is WhiteNoise's middleware as it is.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(get_response, *args, **kwargs)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: Any) -> Any:
        # With autorefresh (development) a file is looked for on disk each time.
        static_file = self.find_file(request.path_info) if self.autorefresh else self.files.get(request.path_info)
        if static_file is not None:
            return self.serve(static_file, request)
        return await self.get_response(request)
