"""Where a webhook may point: checked when a subscription is made or changed, and again
as every attempt connects (a name can come to resolve elsewhere)."""

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from aiohttp import ThreadedResolver
from aiohttp.abc import ResolveResult

from shared.domain.addresses import is_public
from shared.domain.errors import AddressRefused


async def check_address(url: str, *, allow_private: bool) -> None:
    """AddressRefused unless every address the URL's host resolves to is public."""
    if allow_private:
        return
    host = urlsplit(url).hostname or ""
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise AddressRefused(f"{host!r} does not resolve: {exc.strerror}") from exc
    _refuse_unless_public(host, [str(sockaddr[0]) for *_, sockaddr in found])


def check_literal(url: str) -> None:
    """AddressRefused if the URL's host is an IP address that is not public.

    The HTTP client connects to an address written in the URL without asking a resolver,
    so `PublicOnlyResolver` never sees it: this is its check."""
    host = urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return  # a name (the resolver's), or a legacy form the client refuses itself
    _refuse_unless_public(host, [str(address)])


class PublicOnlyResolver(ThreadedResolver):
    """aiohttp's resolver, refusing a name with any address that is not public.

    The check and the connection use the same answer: a name checked by one lookup and
    then connected to by another could resolve to a public address the first time and to
    an internal one the second (DNS rebinding). aiohttp reports the refusal, an OSError,
    as a connection error to that host (its text: the error's strerror), which the attempt
    records."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await super().resolve(host, port, family)
        try:
            _refuse_unless_public(host, [result["host"] for result in found])
        except AddressRefused as exc:
            raise OSError(errno.EACCES, str(exc)) from exc
        return found


def _refuse_unless_public(host: str, addresses: Sequence[str]) -> None:
    for address in addresses:
        if not is_public(ipaddress.ip_address(address)):
            raise AddressRefused(f"{host!r} resolves to {address}, which is not public")
