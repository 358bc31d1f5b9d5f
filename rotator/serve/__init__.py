"""``rotator serve``: the always-on rotation daemon.

    code = await run_daemon(settings, stop=stop, config_path=Path("rotator.toml"))

Rotations are triggered by lease expiry (``schedule``), by Vault events (``events``) and by
authenticated webhooks (``webhook``); all go through one deduplicating queue (``queue``) into the
batch engine. ``app`` serves /healthz, /readyz, /metrics and the webhook; ``metrics`` holds the
Prometheus registry.
"""

from __future__ import annotations

from rotator.serve.daemon import Daemon, run_daemon

__all__ = ["Daemon", "run_daemon"]
