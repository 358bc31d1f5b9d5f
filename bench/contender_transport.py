"""Contender: rotator with a chosen Vault KV transport (``vault.transport``), for
``python -m bench.vault_transport``.

    python -m bench.contender_transport SPEC.json     # spec.mode is "hvac" or "aiohttp"

The same run as :mod:`bench.contender_rotator` (inventory from Vault, then ``Runtime.rotate``,
in a process of its own, Vault requests counted at ``VaultClient.request``, which the KV calls
pass on both transports); only the Vault transport differs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

from bench import contender_rotator
from bench.spec import Result, Spec
from rotator.config import Settings
from rotator.logs import configure_logging

__all__ = ["main"]


def _with_transport(base: Callable[[Spec], Settings]) -> Callable[[Spec], Settings]:
    def settings_for(spec: Spec) -> Settings:
        settings = base(spec)
        vault = dataclasses.replace(settings.vault, transport=spec.mode)  # type: ignore[arg-type]
        return dataclasses.replace(settings, vault=vault)

    return settings_for


async def run(spec: Spec) -> Result:
    if spec.mode not in ("hvac", "aiohttp"):
        raise SystemExit(f"spec.mode must be hvac or aiohttp, not {spec.mode!r}")
    # Instrumentation in this process only: rotator's own contender, with the transport set.
    contender_rotator.settings_for = _with_transport(contender_rotator.settings_for)  # type: ignore[assignment]
    return await contender_rotator.run(spec)


def main() -> int:
    spec = Spec.load(Path(sys.argv[1]))
    configure_logging(level="info", fmt="json", stream=sys.stderr)
    result = asyncio.run(run(spec))
    print(result.to_json_line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
