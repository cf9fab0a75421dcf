"""Where a webhook may go: no server-side request forgery.

A destination is an http:// or https:// URL. Its host name is resolved, and every address it
resolves to must be public: a loopback, private, link-local (cloud metadata services live
there), shared, reserved, multicast or unspecified address is refused, unless the operator
allows private destinations (--webhook-allow-private). The check is made when a job names the
endpoint (a name that does not resolve is refused then) and again before every attempt, which
connects to the very address it checked (``connect_url``: no second lookup between the check
and the connection) while the request keeps the name for its Host header and TLS's SNI.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_SECONDS = 5.0

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class BadDestination(ValueError):
    """Why a webhook may not go there (a sentence's end: "notify.url: <reason>")."""


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses ``host`` names (empty, or OSError, when it names none)."""


class SystemResolver:
    """The system's resolver (getaddrinfo, in the event loop's executor)."""

    async def resolve(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Destination:
    url: str
    scheme: str
    host: str  # as the URL names it (lower case, no brackets)
    port: int


def parse_url(url: str) -> Destination:
    """The destination ``url`` names; BadDestination when it is no http(s) URL with a host."""
    if not url:
        raise BadDestination("is required")
    if len(url) > MAX_URL_LENGTH:
        raise BadDestination(f"must be at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise BadDestination(f"is not a URL ({error})") from None
    if parts.scheme not in ("http", "https"):
        raise BadDestination("must be an http:// or https:// URL")
    if not parts.hostname:
        raise BadDestination("must name a host")
    if parts.username is not None or parts.password is not None:
        raise BadDestination("must not carry credentials")
    if parts.fragment:
        raise BadDestination("must not have a fragment")
    default_port = 443 if parts.scheme == "https" else 80
    return Destination(url, parts.scheme, parts.hostname, port or default_port)


def refusal(address: str) -> str | None:
    """Why a webhook may not be sent to ``address`` (None: it is a public address)."""
    ip: Address = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind, applies in (
        ("an unspecified", ip.is_unspecified),
        ("a loopback", ip.is_loopback),
        ("a link-local", ip.is_link_local),
        ("a multicast", ip.is_multicast),
        ("a private", ip.is_private),
        ("a reserved", ip.is_reserved),
    ):
        if applies:
            return f"{kind} address ({ip})"
    if not ip.is_global:
        return f"a non-public address ({ip})"
    return None


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


async def resolve_checked(
    destination: Destination, resolver: Resolver, *, allow_private: bool
) -> str:
    """The address to connect to for ``destination``: resolved once, every address checked;
    BadDestination when the name does not resolve or names an address that is refused."""
    literal = _literal(destination.host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
                addresses = await resolver.resolve(destination.host, destination.port)
        except (OSError, TimeoutError, UnicodeError):
            addresses = []
        if not addresses:
            raise BadDestination(f"{destination.host} does not resolve")
    if not allow_private:
        for address in addresses:
            why = refusal(address)
            if why is not None:
                named = "is" if literal is not None else f"{destination.host} resolves to"
                raise BadDestination(
                    f"{named} {why}: only public destinations are allowed "
                    "(the operator may allow private ones: --webhook-allow-private)"
                )
    return addresses[0]


def connect_url(destination: Destination, address: str) -> str:
    """``destination``'s URL with its host replaced by ``address`` (the one that was checked)."""
    parts = urlsplit(destination.url)
    host = f"[{address}]" if ":" in address else address
    return urlunsplit(
        (parts.scheme, f"{host}:{destination.port}", parts.path or "/", parts.query, "")
    )


def host_header(destination: Destination) -> str:
    """The Host header naming ``destination`` (its port only when not the scheme's)."""
    host = f"[{destination.host}]" if ":" in destination.host else destination.host
    default_port = 443 if destination.scheme == "https" else 80
    return host if destination.port == default_port else f"{host}:{destination.port}"
