"""The one loopback rule the API endpoints, Vault's address and doctor share."""

from __future__ import annotations

import pytest

from rotator.netaddr import is_loopback


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.9.8.7", "::1", "[::1]"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    [
        "",
        "10.0.0.1",
        "0.0.0.0",  # noqa: S104 - a test value: "any address" is not loopback
        "::",
        "example.com",
        "127.attacker.example",  # a DNS name that merely starts like a loopback address
        "localhost.attacker.example",
    ],
)
def test_other_hosts(host: str) -> None:
    assert not is_loopback(host)
