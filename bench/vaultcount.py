"""OpenBao's own count of the requests it handled, read from its Prometheus metrics.

    count = VaultRequests(addr, ca_file, token)
    before = count(); ...; after = count()       # None when the metrics cannot be read

``vault_core_handle_request_count`` counts every request that reaches the core (reads, writes,
lists, token look-ups, 404s included; not ``sys/health`` and not the metrics request itself);
login requests are counted apart and added. No proxy sits in the path, so the count costs the
contenders nothing.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["VaultRequests", "parse_request_count"]

_COUNTERS = ("vault_core_handle_request_count", "vault_core_handle_login_request_count")


def parse_request_count(text: str) -> int | None:
    """The sum of the request counters in a Prometheus text page; None if neither is there."""
    total: int | None = None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in _COUNTERS:
            try:
                total = (total or 0) + int(float(value))
            except ValueError:
                continue
    return total


class VaultRequests:
    """Reads the counter; the token goes in a header, never in the URL."""

    def __init__(self, addr: str, ca_file: Path | None, token: str) -> None:
        self._url = f"{addr.rstrip('/')}/v1/sys/metrics?format=prometheus"
        self._token = token
        context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )

    def __call__(self) -> int | None:
        request = urllib.request.Request(self._url, headers={"X-Vault-Token": self._token})  # noqa: S310 - OpenBao's loopback URL
        try:
            with self._opener.open(request, timeout=10) as response:
                text = response.read().decode("utf-8", errors="replace")
        except (urllib.error.URLError, OSError):
            return None
        return parse_request_count(text)
