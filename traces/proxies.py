"""The client behind the reverse proxies this server trusts (``TRACE_TRUSTED_PROXIES``).

A proxy says who its client was in ``X-Forwarded-For`` (each proxy appends the address it was
connected from) and which scheme it was asked on in ``X-Forwarded-Proto``. Anybody can send those
headers, so they count only on a connection from a trusted proxy, and only as far as the chain of
trusted proxies goes: the client is the right-most address of ``X-Forwarded-For`` that is not a
trusted proxy. Whatever stands left of it was written by a host nobody vouches for.

``ProxyHeaders`` applies this once, to the ASGI scope's ``client`` and ``scheme``, in front of
everything (``tracesite/asgi.py``): Django's views (``REMOTE_ADDR``, ``request.is_secure()``, who
may read ``/metrics``, the login throttle), the OTLP endpoint and the WebSocket consumers, and their
logs, all see the same client.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

from django.conf import settings
from django.http import HttpRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SECURE_SCHEMES = {"https", "wss"}
PLAIN_SCHEMES = {"http", "ws"}


def parse_address(value: str) -> Address | None:
    """An address as servers and proxies write it: ``203.0.113.7``, ``2001:db8::1``, either with a
    port (``203.0.113.7:4711``, ``[2001:db8::1]:4711``), an IPv4 address mapped to IPv6 as the
    IPv4 one; None for anything else (``unknown``, an obfuscated name)."""
    value = value.strip()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=16)
def networks(values: tuple[str, ...]) -> tuple[Network, ...]:
    """``TRACE_TRUSTED_PROXIES`` or ``TRACE_MONITORING_IPS`` (validated by ``tracesite.env.networks``)."""
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def _within(address: str, trusted: tuple[Network, ...]) -> bool:
    parsed = parse_address(address)
    return parsed is not None and any(parsed in network for network in trusted)


def in_networks(address: str, values: list[str]) -> bool:
    """Whether ``address`` is one of the addresses or networks ``values``."""
    return _within(address, networks(tuple(values)))


def forwarded_client(peer: str, forwarded_for: list[str], trusted: tuple[Network, ...]) -> str:
    """The client of a connection from ``peer``: walking ``X-Forwarded-For`` from the right, the
    first hop that is not a trusted proxy. An entry that is not an address ends the walk at the
    proxy that wrote it, the nearest hop whose address is known."""
    client = peer
    for entry in reversed(forwarded_for):
        if not _within(client, trusted):
            break
        hop = parse_address(entry)
        if hop is None:
            break
        client = str(hop)
    return client


def _header_values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """Every comma-separated value of every ``name`` header, in order."""
    values: list[str] = []
    for key, value in headers:
        if key.lower() == name:
            values.extend(item.strip() for item in value.decode("latin-1").split(","))
    return [value for value in values if value]


class ProxyHeaders:
    """ASGI: an HTTP or WebSocket scope from a trusted proxy gets the client and scheme the proxy
    forwarded; every other scope is passed on as it came, whatever headers it carries."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and settings.TRACE_TRUSTED_PROXIES and scope.get("client"):
            scope = self.forwarded(scope, networks(tuple(settings.TRACE_TRUSTED_PROXIES)))
        await self.app(scope, receive, send)

    @staticmethod
    def forwarded(scope: dict, trusted: tuple[Network, ...]) -> dict:
        peer = str(scope["client"][0])
        if not _within(peer, trusted):
            return scope
        headers = scope.get("headers") or []
        scope = dict(scope)
        client = forwarded_client(peer, _header_values(headers, b"x-forwarded-for"), trusted)
        if client != peer:
            scope["client"] = [client, 0]  # the client's port is not forwarded
        # The right-most value is the one the trusted proxy set: one that appends would leave a
        # value the client sent on the left.
        proto = (_header_values(headers, b"x-forwarded-proto") or [""])[-1].lower()
        if proto in SECURE_SCHEMES | PLAIN_SCHEMES:
            secure = proto in SECURE_SCHEMES
            if scope["type"] == "websocket":
                scope["scheme"] = "wss" if secure else "ws"
            else:
                scope["scheme"] = "https" if secure else "http"
        return scope


def client_address(request: HttpRequest) -> str | None:
    """A request's client address as ``ProxyHeaders`` left it (the login throttle's, django-axes'
    ``AXES_CLIENT_IP_CALLABLE``)."""
    return request.META.get("REMOTE_ADDR") or None


def scope_client(scope: dict) -> str:
    """The client's address of an ASGI scope, for logs."""
    client = scope.get("client")
    return str(client[0]) if client else "-"
