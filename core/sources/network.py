"""Where a pull asked for by a remote caller may reach: the configured sources, never the inside network.

A pull requested over the HTTP API runs with the server's network position,
so an API caller could otherwise make the server fetch from addresses only it
can reach (a cloud metadata service, an admin page on the LAN). Such a pull
gets a `NetworkGuard`: its spec must be `default`, `hf:`, `pypi:` or a URL
matching `api_pull_allowlist`, and every connection it opens, redirects
included, is checked where it is made. The host is resolved once, every
address it resolves to must be public, and the connection goes to that
checked address, so a DNS answer that changes between check and connect
(rebinding) cannot slip through. Hosts the operator configured (the Hugging
Face endpoint, the package index, the allowlist's hosts) may be private.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpcore
import httpx

from ..errors import PullRefused
from ..settings import Settings

ALLOWLIST_SETTING = "api_pull_allowlist"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default_port = {"https": 443, "http": 80}.get(parts.scheme)
    try:
        port = parts.port or default_port
    except ValueError:
        port = None
    return parts.scheme, (parts.hostname or "").lower(), port


def is_public(address: str) -> bool:
    """True for an address on the public internet: not loopback, private, link-local, reserved or multicast."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class NetworkGuard:
    """The rules for one remote caller's pull; built from the settings by `for_settings`."""

    allowlist: tuple[str, ...]
    """URL prefixes a URL spec may start with (`api_pull_allowlist`)."""
    trusted_hosts: frozenset[str]
    """Hosts the operator configured, which may resolve to private addresses."""

    @classmethod
    def for_settings(cls, settings: Settings) -> NetworkGuard:
        """The guard for pulls asked for by remote callers under these settings."""
        configured = [settings.hf_endpoint, settings.pypi_index_url, *settings.api_pull_allowlist]
        hosts = {_origin(url)[1] for url in configured}
        return cls(allowlist=tuple(settings.api_pull_allowlist), trusted_hosts=frozenset(hosts - {""}))

    def check_url_spec(self, url: str) -> None:
        """Refuse a URL spec that no allowlist entry covers (same scheme, host and port, path under it)."""
        origin = _origin(url)
        path = urlsplit(url).path
        for entry in self.allowlist:
            entry_path = urlsplit(entry).path
            if _origin(entry) == origin and (path == entry_path or path.startswith(entry_path.rstrip("/") + "/")):
                return
        raise PullRefused(
            f"Pulling {url} through the API is not allowed: add its URL prefix to {ALLOWLIST_SETTING} "
            "in the server's ingle.toml, or pull it with `ingle pull` on the server."
        )

    async def checked_address(self, host: str, port: int) -> str:
        """The address to connect to for HOST: HOST itself if trusted, else its address once every answer is public."""
        if host.lower().strip("[]") in self.trusted_hosts:
            return host
        loop = asyncio.get_running_loop()
        try:
            answers = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from error
        addresses = [str(answer[4][0]) for answer in answers]
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}")
        for address in addresses:
            if not is_public(address):
                raise PullRefused(
                    f"Pulling from {host} through the API is not allowed: it resolves to the non-public "
                    f"address {address}; list the host in {ALLOWLIST_SETTING} in the server's ingle.toml "
                    "if it is a mirror you trust."
                )
        return addresses[0]


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the guard checked."""

    def __init__(self, guard: NetworkGuard) -> None:
        self._guard = guard
        # httpcore types AnyIOBackend as a stub for when anyio is missing; httpx always brings anyio.
        self._inner: httpcore.AsyncNetworkBackend = httpcore.AnyIOBackend()  # pyright: ignore[reportAttributeAccessIssue]

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        # TLS still verifies and sends the host name: httpcore takes SNI from the URL, not from here.
        address = await self._guard.checked_address(host, port)
        return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise PullRefused("A pull through the API cannot use a unix socket.")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose every connection the guard checks."""

    def __init__(self, guard: NetworkGuard) -> None:
        super().__init__()
        # httpx offers no option for the network backend, so the pool it built is swapped for an
        # equal one (plain HTTP/1.1, httpx's certificates) that connects through the guard.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), network_backend=_GuardedBackend(guard)
        )
