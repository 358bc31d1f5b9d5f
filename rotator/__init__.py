"""rotator: keep the VNC passwords of a fleet of Alibaba Cloud E-HPC clusters rotated into Vault.

    from rotator import Selection, load_settings, new_run_id, open_runtime, resolve_targets

    settings = load_settings(Path("/etc/rotator/rotator.toml"))
    async with open_runtime(settings) as runtime:
        targets = await resolve_targets(runtime, Selection(all=True))
        summary = await runtime.rotate(targets, run_id=new_run_id())
    print(summary.status, summary.exit_code)

What is exported here is the public surface; every other module is internal and may change.
Names are imported on first use (PEP 562), so ``import rotator`` and ``rotator --help`` stay
fast: aiohttp, hvac, rich and the Alibaba Cloud SDK load only when a command needs them.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

if (
    _typing.TYPE_CHECKING
):  # what type checkers and IDEs see; at runtime __getattr__ below loads them
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

_ERRORS = (
    "AmbiguousApiError",
    "ApiError",
    "ConfigError",
    "ErrorScope",
    "RetryableApiError",
    "RetryClass",
    "RotatorError",
    "TerminalApiError",
    "ThrottledError",
    "VaultConflictError",
    "VaultError",
    "VaultPermissionError",
    "VaultUnavailableError",
)

# public name -> the module that defines it
_WHERE: dict[str, str] = {
    "Settings": "rotator.config",
    "load_settings": "rotator.config",
    "EhpcClient": "rotator.ehpc.client",
    "Endpoints": "rotator.ehpc.client",
    "Timeouts": "rotator.ehpc.client",
    "AccessKey": "rotator.ehpc.credentials",
    "DefaultChainCredentials": "rotator.ehpc.credentials",
    "StaticCredentials": "rotator.ehpc.credentials",
    "Selection": "rotator.engine.inventory",
    "resolve_targets": "rotator.engine.inventory",
    "ClusterOutcome": "rotator.engine.report",
    "Outcome": "rotator.engine.report",
    "RunStatus": "rotator.engine.report",
    "RunSummary": "rotator.engine.report",
    "Target": "rotator.engine.rotation",
    "Runtime": "rotator.engine.runtime",
    "new_run_id": "rotator.engine.runtime",
    "open_runtime": "rotator.engine.runtime",
    "Secret": "rotator.secret",
    **dict.fromkeys(_ERRORS, "rotator.errors"),
}

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


def __getattr__(name: str) -> _typing.Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'rotator' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
