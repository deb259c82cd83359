from django.urls import re_path

from traces import consumers

websocket_urlpatterns = [
    # Any path segment: the consumer refuses a bad session id with close code 4400.
    re_path(r"^ws/(?P<session_id>[^/?]*)/?$", consumers.TraceConsumer.as_asgi()),
    # Every other path: a clear close (4400), not the router's error and an HTTP 500.
    re_path(r"", consumers.UnknownPath.as_asgi()),
]
