"""Network addresses: the one loopback test every listener uses (DESIGN: bind to loopback by
default)."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves loopback only: ``localhost`` in any case, or a loopback
    IP address (all of 127.0.0.0/8, ``::1``; brackets allowed).

        >>> is_loopback("127.0.0.2"), is_loopback("[::1]"), is_loopback("LOCALHOST")
        (True, True, True)
        >>> is_loopback("0.0.0.0"), is_loopback("example.test")
        (False, False)

    Never raises.
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False
