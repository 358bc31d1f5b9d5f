"""Host-name rules shared by the API client, the Vault transport and ``rotator doctor``.

A leaf module: it imports nothing of ours, so every layer may use it.
"""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP literal (``127.0.0.0/8``, ``::1``, bracketed or not).

    Only these may be reached over plain http: nothing leaves the machine. A DNS name that
    merely starts like one (``127.example.com``) is not loopback.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
