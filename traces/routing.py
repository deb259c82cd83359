from django.urls import re_path

from traces import consumers

websocket_urlpatterns = [
    re_path(r"^ws/(?P<session_id>[^/]*)$", consumers.TraceConsumer.as_asgi()),
]
