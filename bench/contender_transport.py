"""Contender: rotator with a chosen Vault KV transport (``vault.transport``), for
``python -m bench.vault_transport``.

    python -m bench.contender_transport SPEC.json     # spec.mode is "hvac" or "aiohttp"

The same run as :mod:`bench.contender_rotator` (inventory from Vault, then ``Runtime.rotate``,
in a process of its own); only the Vault transport differs, and Vault requests are counted on
both paths (the KV calls over aiohttp do not pass through ``VaultClient.request``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import contender_rotator
from bench.spec import Result, Spec
from rotator.config import Settings
from rotator.logs import configure_logging
from rotator.vault.kv_aio import AioVaultHttp

__all__ = ["main"]


def _with_transport(base: Callable[[Spec], Settings]) -> Callable[[Spec], Settings]:
    def settings_for(spec: Spec) -> Settings:
        settings = base(spec)
        vault = dataclasses.replace(settings.vault, transport=spec.mode)  # type: ignore[arg-type]
        return dataclasses.replace(settings, vault=vault)

    return settings_for


def _count_aio(counter: list[int]) -> None:
    send = AioVaultHttp.request

    async def counted(self: AioVaultHttp, *args: Any, **kwargs: Any) -> dict[str, Any]:
        counter[0] += 1
        return await send(self, *args, **kwargs)

    AioVaultHttp.request = counted  # type: ignore[method-assign]


async def run(spec: Spec) -> Result:
    if spec.mode not in ("hvac", "aiohttp"):
        raise SystemExit(f"spec.mode must be hvac or aiohttp, not {spec.mode!r}")
    aio_requests = [0]
    _count_aio(aio_requests)
    # Instrumentation in this process only: rotator's own contender, with the transport set.
    contender_rotator.settings_for = _with_transport(contender_rotator.settings_for)  # type: ignore[assignment]
    result = await contender_rotator.run(spec)
    result.vault_ops += aio_requests[0]
    return result


def main() -> int:
    spec = Spec.load(Path(sys.argv[1]))
    configure_logging(level="info", fmt="json", stream=sys.stderr)
    result = asyncio.run(run(spec))
    print(result.to_json_line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
