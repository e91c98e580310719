"""Which addresses webhooks may reach (server-side request forgery), without sending anything:
the classifier, the literal check and the resolver's refusal are pure or local."""

import ipaddress
import re
import socket
from typing import Any

import pytest
from aiohttp import ThreadedResolver

from shared.domain.addresses import is_public
from shared.domain.errors import AddressRefused
from shared.services.webhook_targets import PublicOnlyResolver, check_literal

NOT_PUBLIC = [
    "127.0.0.1",  # loopback
    "10.1.2.3",  # private
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # link-local: the cloud metadata service
    "100.64.0.1",  # shared address space (carrier-grade NAT)
    "0.0.0.0",
    "192.0.2.10",  # documentation
    "224.0.0.1",  # multicast
    "::1",
    "fe80::1",
    "fc00::1",  # unique local
    "fd00:ec2::254",  # a metadata service outside the ranges
    "::ffff:10.0.0.1",  # a private IPv4 address mapped into IPv6
    "::ffff:127.0.0.1",
    "ff02::1",
]
PUBLIC = ["1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", "::ffff:1.1.1.1"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_loopback_private_link_local_and_metadata_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_globally_routable_unicast_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/hook", "https://[::ffff:127.0.0.1]/", "http://10.0.0.8/"]
)
def test_an_address_written_in_the_url_is_refused_unless_public(url: str) -> None:
    with pytest.raises(AddressRefused, match="not public"):
        check_literal(url)


@pytest.mark.parametrize("url", ["https://1.1.1.1/hook", "https://hooks.example.com/x"])
def test_a_public_address_or_a_name_passes_the_literal_check(url: str) -> None:
    check_literal(url)  # a name is left to the resolver


async def test_the_resolver_refuses_a_name_that_resolves_to_loopback() -> None:
    with pytest.raises(OSError, match="not public"):
        await PublicOnlyResolver().resolve("localhost", 80, socket.AF_UNSPEC)


async def test_the_resolver_refuses_a_name_if_any_of_its_addresses_is_not_public(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = [_answer("hooks.example.com", "1.1.1.1"), _answer("hooks.example.com", "10.0.0.1")]

    async def resolve(self: ThreadedResolver, host: str, *args: Any) -> list[Any]:
        return answers

    monkeypatch.setattr(ThreadedResolver, "resolve", resolve)
    resolver = PublicOnlyResolver()
    with pytest.raises(OSError, match=re.escape("10.0.0.1, which is not public")):
        await resolver.resolve("hooks.example.com", 443)
    answers.pop()
    assert await resolver.resolve("hooks.example.com", 443) == answers


def _answer(host: str, address: str) -> dict[str, Any]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return {
        "hostname": host,
        "host": address,
        "port": 443,
        "family": family,
        "proto": 0,
        "flags": 0,
    }
