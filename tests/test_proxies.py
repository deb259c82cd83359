"""X-Forwarded-For and X-Forwarded-Proto count only from TRACE_TRUSTED_PROXIES, at every entry
point of the ASGI application: Django's views, the OTLP endpoint and the WebSocket consumers."""

from __future__ import annotations

import json
import logging

import pytest
from channels.testing import HttpCommunicator
from django.core.asgi import get_asgi_application

from tests.live import connect, receive
from traces.proxies import ProxyHeaders, forwarded_client, networks
from tracesite.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

PROXY = "192.0.2.10"  # the reverse proxy in front of the server
OUTSIDER = "203.0.113.9"  # a client on the internet
INSIDE = "10.1.2.3"  # an address in TRACE_MONITORING_IPS


@pytest.fixture
def production(settings):
    settings.DEBUG = False
    settings.TRACE_METRICS_TOKEN = "scrape-secret"
    settings.TRACE_MONITORING_IPS = ["10.0.0.0/8"]
    settings.TRACE_TRUSTED_PROXIES = []


async def get(path: str, peer: str, app=application, **headers: str) -> dict:
    """A GET through the server's whole ASGI application (or ``app``), from a connection from ``peer``."""
    communicator = HttpCommunicator(
        app,
        "GET",
        path,
        headers=[
            (b"host", b"localhost"),
            *((name.replace("_", "-").encode(), v.encode()) for name, v in headers.items()),
        ],
    )
    communicator.scope["client"] = [peer, 40000]
    return await communicator.get_response(timeout=30)


def trusting(*hops: str) -> tuple:
    return networks(hops)


def test_it_takes_the_right_most_address_that_is_not_a_trusted_proxy():
    trusted = trusting("192.0.2.0/28", "2001:db8::/64")
    assert forwarded_client(PROXY, [INSIDE, OUTSIDER], trusted) == OUTSIDER  # the client wrote 10.1.2.3 itself
    assert forwarded_client(PROXY, [INSIDE, OUTSIDER, "192.0.2.11"], trusted) == OUTSIDER  # two proxies
    assert forwarded_client(PROXY, ["192.0.2.11", "192.0.2.12"], trusted) == "192.0.2.11"  # all proxies
    assert forwarded_client(PROXY, [], trusted) == PROXY  # a request the proxy made itself
    assert forwarded_client(OUTSIDER, [INSIDE], trusted) == OUTSIDER  # not from a proxy: the header is nobody's word
    assert forwarded_client("2001:db8::5", ["[2001:db8:1::7]:5123"], trusted) == "2001:db8:1::7"
    assert forwarded_client(PROXY, ["203.0.113.9:5123"], trusted) == OUTSIDER
    assert forwarded_client("::ffff:192.0.2.10", [OUTSIDER], trusted) == OUTSIDER
    # What is not an address ends the walk at the proxy that wrote it.
    assert forwarded_client(PROXY, [INSIDE, "unknown"], trusted) == PROXY
    assert forwarded_client(PROXY, [INSIDE, "unknown", "192.0.2.11"], trusted) == "192.0.2.11"


async def test_a_forged_forwarded_for_from_an_untrusted_peer_gets_no_monitoring_access(production):
    for path in ("/metrics", "/health"):
        forged = await get(path, OUTSIDER, x_forwarded_for=INSIDE)
        assert forged["status"] == (401 if path == "/metrics" else 200)
        assert b"tracesite_" not in forged["body"] and b"checks" not in forged["body"]
    assert (await get("/metrics", INSIDE))["status"] == 200  # the address itself is let in


async def test_a_trusted_proxys_forwarded_for_is_the_client(production, settings):
    settings.TRACE_TRUSTED_PROXIES = ["192.0.2.0/28"]
    assert (await get("/metrics", PROXY, x_forwarded_for=INSIDE))["status"] == 200
    health = await get("/health", PROXY, x_forwarded_for=INSIDE)
    assert "checks" in json.loads(health["body"])
    # What the client wrote left of the address the proxy appended is not believed.
    assert (await get("/metrics", PROXY, x_forwarded_for=f"{INSIDE}, {OUTSIDER}"))["status"] == 401
    # Nor is the header from anybody else.
    assert (await get("/metrics", OUTSIDER, x_forwarded_for=INSIDE))["status"] == 401


@pytest.fixture
def https_only(production, settings):
    """The README's settings behind a TLS proxy; Django's middleware reads them when it is built."""
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_REDIRECT_EXEMPT = [r"^health$", r"^metrics$"]
    return ProxyHeaders(get_asgi_application())


async def test_https_is_believed_from_a_trusted_proxy_only(https_only, settings):
    forged = await get("/accounts/login/", OUTSIDER, https_only, x_forwarded_proto="https")
    assert forged["status"] == 301 and dict(forged["headers"])[b"Location"].startswith(b"https://")
    settings.TRACE_TRUSTED_PROXIES = [PROXY]
    secure = await get("/accounts/login/", PROXY, https_only, x_forwarded_for=OUTSIDER, x_forwarded_proto="https")
    assert secure["status"] == 200 and dict(secure["headers"])[b"Strict-Transport-Security"].startswith(b"max-age")
    plain = await get("/accounts/login/", PROXY, https_only, x_forwarded_for=OUTSIDER, x_forwarded_proto="http")
    assert plain["status"] == 301
    # A proxy that appends: the right-most value is the one it set.
    appended = await get(
        "/accounts/login/", PROXY, https_only, x_forwarded_for=OUTSIDER, x_forwarded_proto="https, http"
    )
    assert appended["status"] == 301
    assert (await get("/health", PROXY, https_only))["status"] == 200  # load balancers probe the plain port


async def otlp_refusal_logged_for(caplog, peer: str, forwarded_for: str) -> str:
    caplog.clear()
    headers = [
        (b"host", b"localhost"),
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer ts_not-a-token"),
        (b"x-forwarded-for", forwarded_for.encode()),
    ]
    communicator = HttpCommunicator(application, "POST", "/v1/traces", body=b"{}", headers=headers)
    communicator.scope["client"] = [peer, 40000]
    assert (await communicator.get_response(timeout=30))["status"] == 401
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("otlp export refused")]
    return line


async def test_the_otlp_endpoint_logs_the_client_a_trusted_proxy_forwarded_and_no_other(caplog, settings):
    caplog.set_level(logging.INFO, logger="traces")
    settings.TRACE_TRUSTED_PROXIES = [PROXY]
    assert (await otlp_refusal_logged_for(caplog, OUTSIDER, INSIDE)).endswith(f"client={OUTSIDER}")
    assert (await otlp_refusal_logged_for(caplog, PROXY, INSIDE)).endswith(f"client={INSIDE}")


async def socket_logged_for(caplog, peer: str, forwarded_for: str) -> str:
    caplog.clear()
    communicator = connect("/ws/proxied", headers=[(b"x-forwarded-for", forwarded_for.encode())])
    communicator.scope["client"] = [peer, 40000]
    connected, _ = await communicator.connect()
    assert connected
    await receive(communicator)
    await communicator.disconnect()
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("websocket opened")]
    return line


@pytest.mark.usefixtures("configured_agent_db")
async def test_a_socket_is_logged_with_the_client_a_trusted_proxy_forwarded_and_no_other(caplog, settings):
    caplog.set_level(logging.INFO, logger="traces")
    settings.TRACE_TRUSTED_PROXIES = [PROXY]
    assert (await socket_logged_for(caplog, OUTSIDER, INSIDE)).endswith(f"client={OUTSIDER}")
    assert (await socket_logged_for(caplog, PROXY, INSIDE)).endswith(f"client={INSIDE}")


async def test_a_sockets_scheme_is_the_trusted_proxys_word(settings):
    settings.ALLOWED_HOSTS = ["traces.example.com"]

    async def opens(origin: str, peer: str, proto: str) -> bool:
        headers = [
            (b"host", b"traces.example.com"),
            (b"origin", origin.encode()),
            (b"x-forwarded-proto", proto.encode()),
        ]
        communicator = connect("/ws/origin", headers=headers)
        communicator.scope["client"] = [peer, 40000]
        connected, _ = await communicator.connect()
        if connected:
            await communicator.disconnect()
        return connected

    settings.TRACE_TRUSTED_PROXIES = [PROXY]
    assert await opens("https://traces.example.com", PROXY, "https")
    assert not await opens("http://traces.example.com", PROXY, "https")
    assert not await opens("https://traces.example.com", OUTSIDER, "https")  # a client cannot claim https
    assert await opens("http://traces.example.com", OUTSIDER, "https")
