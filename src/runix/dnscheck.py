"""Looks up TXT records to verify domain ownership, against a resolver `RUNIX_DNS_RESOLVER` can point elsewhere."""

from __future__ import annotations

import dns.exception
import dns.resolver


def txt_values(name: str, resolver_address: str | None, timeout: float = 3.0) -> list[str]:
    """Every TXT string at `name`; empty when the name or record does not exist or the lookup fails."""
    resolver = dns.resolver.Resolver(configure=resolver_address is None)
    if resolver_address:
        host, _, port = resolver_address.rpartition(":") if resolver_address.count(":") == 1 else (
            resolver_address, "", "")
        resolver.nameservers = [host or resolver_address]
        resolver.port = int(port) if port else 53
    resolver.lifetime = timeout
    try:
        answer = resolver.resolve(name, "TXT")
    except (dns.exception.DNSException, OSError):
        return []
    return [b"".join(r.strings).decode(errors="replace") for r in answer]
