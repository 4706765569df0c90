"""Where the hub may send webhooks: http(s) URLs whose host resolves only to public
addresses. A tenant must not be able to make the hub call its internal network (loopback,
link-local, private, reserved, multicast); the check runs when an endpoint is registered
and again on every connection (``PublicOnlyResolver``), so a name that later resolves to
an internal address (DNS rebinding) is refused too."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver


class RefusedUrl(ValueError):
    """Not a URL the hub sends webhooks to; the message says why."""


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
    )


def check_shape(url: str) -> str:
    """An absolute http(s) URL with a host; the host, else :class:`RefusedUrl`."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        # A bad port is a ValueError here rather than at the first send; 0 is none.
        if parts.port == 0:
            raise ValueError("port 0")
    except ValueError:
        raise RefusedUrl("must be an absolute http:// or https:// URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise RefusedUrl("must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise RefusedUrl("must not carry credentials (sign with the webhook secret instead)")
    try:
        host.encode("idna")  # a label over 63 characters, or one IDNA cannot spell
    except UnicodeError:
        raise RefusedUrl("has a host name that is not valid") from None
    return host


async def check_shape_only(url: str) -> None:
    """The check when private receivers are allowed (NOTIFYHUB_WEBHOOKS_ALLOW_PRIVATE)."""
    check_shape(url)


async def check_public(url: str) -> None:
    """Refuse ``url`` if its host resolves to any non-public address."""
    host = check_shape(url)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        # Not resolvable (yet): nothing to refuse now; every connection is checked anyway.
        return
    addresses = {info[4][0] for info in infos}
    private = sorted(a for a in addresses if not is_public(str(a)))
    if private:
        raise RefusedUrl(
            f"resolves to a non-public address ({', '.join(map(str, private))}); set "
            "NOTIFYHUB_WEBHOOKS_ALLOW_PRIVATE=true to allow internal receivers"
        )


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver, answering only public addresses (the connection fails with a
    clear error otherwise)."""

    def __init__(self) -> None:
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        public = [r for r in results if is_public(r["host"])]
        if not public:
            raise OSError(f"{host} resolves to no public address; webhook refused")
        return public

    async def close(self) -> None:
        await self._resolver.close()
