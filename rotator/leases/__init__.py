"""Check-out leases: a person checks a VNC password out for a while; when the last lease ends
(checked in or expired) the password is rotated, so whoever saw it loses access.

``model`` is the plain-code core (no I/O), ``vault`` stores it in Vault with check-and-set and
asks Vault who a caller is, ``service`` puts both behind the operations the CLI and
``rotator serve`` offer, ``cron`` is the hook that lets ``rotator rotate`` settle expired leases.
"""

from __future__ import annotations
