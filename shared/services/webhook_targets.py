"""Where a webhook may point: checked when a subscription is made or changed, and again
before every attempt (a name can come to resolve elsewhere)."""

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

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
    for *_, sockaddr in found:
        if not is_public(ipaddress.ip_address(sockaddr[0])):
            raise AddressRefused(f"{host!r} resolves to {sockaddr[0]}, which is not public")
