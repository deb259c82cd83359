"""ASGI entry point: ``daphne tracesite.asgi:application`` (or uvicorn)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracesite.settings")
# Initialise Django (apps, models) before importing anything that uses the ORM.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from traces import gctune  # noqa: E402
from traces.proxies import ProxyHeaders  # noqa: E402
from traces.receiver import OtlpEndpoint  # noqa: E402
from traces.routing import websocket_urlpatterns  # noqa: E402
from traces.runtime import Lifecycle  # noqa: E402
from traces.security import origin_validator  # noqa: E402

# The process's runtime (the history's writer process, heartbeats and the reaper, the bus...)
# starts with the server and stops with it, under daphne and uvicorn alike.
application = Lifecycle(
    # Behind the proxies in TRACE_TRUSTED_PROXIES, the client and scheme they forwarded, for everything below.
    ProxyHeaders(
        ProtocolTypeRouter(
            {
                # OTLP exports (/v1/traces) are answered on the event loop, without Django's middleware.
                "http": OtlpEndpoint(django_asgi_app),
                # Like AllowedHostsOriginValidator, plus TRACE_ALLOWED_ORIGINS (a separately served front end).
                "websocket": origin_validator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
            }
        )
    )
)
gctune.tune(settings.TRACE_GC_THRESHOLD)  # what start-up made is never garbage; collections less often
