"""Which addresses a webhook may be delivered to: a pure classifier (server-side request
forgery). A user who could aim deliveries at loopback, a private network or a cloud
metadata service would make this service call into places they cannot reach."""

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services that live at addresses not caught by the ranges below.
METADATA = {ipaddress.ip_address("fd00:ec2::254")}


def is_public(address: IPAddress) -> bool:
    """True only for globally routable unicast addresses (an IPv4 address mapped into IPv6
    counts as the IPv4 address it carries)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA or address.is_multicast:
        return False
    # is_global excludes loopback, private, link-local (169.254.169.254 included),
    # shared (100.64/10), reserved, documentation and unspecified addresses.
    return address.is_global
