"""rotator: keep the VNC passwords of a fleet of Alibaba Cloud E-HPC clusters rotated into Vault.

    from rotator import Selection, load_settings, new_run_id, open_runtime, resolve_targets

    settings = load_settings(Path("/etc/rotator/rotator.toml"))
    async with open_runtime(settings) as runtime:
        targets = await resolve_targets(runtime, Selection(all=True))
        summary = await runtime.rotate(targets, run_id=new_run_id())
    print(summary.status, summary.exit_code)

What is exported here is the public surface; every other module is internal and may change.
"""

from __future__ import annotations

from rotator.config import Settings, load_settings
from rotator.ehpc.client import EhpcClient, Endpoints, Timeouts
from rotator.ehpc.credentials import AccessKey, DefaultChainCredentials, StaticCredentials
from rotator.engine.inventory import Selection, resolve_targets
from rotator.engine.report import ClusterOutcome, Outcome, RunStatus, RunSummary
from rotator.engine.rotation import Target
from rotator.engine.runtime import Runtime, new_run_id, open_runtime
from rotator.errors import (
    AmbiguousApiError,
    ApiError,
    ConfigError,
    ErrorScope,
    RetryableApiError,
    RetryClass,
    RotatorError,
    TerminalApiError,
    ThrottledError,
    VaultConflictError,
    VaultError,
    VaultPermissionError,
    VaultUnavailableError,
)
from rotator.secret import Secret

__all__ = [
    "AccessKey",
    "AmbiguousApiError",
    "ApiError",
    "ClusterOutcome",
    "ConfigError",
    "DefaultChainCredentials",
    "EhpcClient",
    "Endpoints",
    "ErrorScope",
    "Outcome",
    "RetryClass",
    "RetryableApiError",
    "RotatorError",
    "RunStatus",
    "RunSummary",
    "Runtime",
    "Secret",
    "Selection",
    "Settings",
    "StaticCredentials",
    "Target",
    "TerminalApiError",
    "ThrottledError",
    "Timeouts",
    "VaultConflictError",
    "VaultError",
    "VaultPermissionError",
    "VaultUnavailableError",
    "load_settings",
    "new_run_id",
    "open_runtime",
    "resolve_targets",
]
