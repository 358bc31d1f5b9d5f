"""Contender: rotator itself, end to end (inventory from Vault, then ``Runtime.rotate``).

    python -m bench.contender_rotator SPEC.json      # prints one bench_result JSON line

Runs in a process of its own so its CPU time and peak RSS are rotator's alone. Logs go to
stderr as JSON lines, as in a real ``rotator rotate`` run that is not on a terminal.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.measure import LagProbe, Meter, peak_rss_mb
from bench.spec import Result, Spec
from rotator.config import (
    CredentialsSettings,
    EhpcSettings,
    InventorySettings,
    RotationSettings,
    Settings,
    VaultConfig,
)
from rotator.engine.inventory import Selection, resolve_targets
from rotator.engine.report import Outcome
from rotator.engine.runtime import new_run_id, open_runtime
from rotator.logs import configure_logging

__all__ = ["main", "settings_for"]


def settings_for(spec: Spec) -> Settings:
    return Settings(
        ehpc=EhpcSettings(
            regions=list(spec.regions),
            endpoint=spec.sim_base_url,
            ca_bundle=spec.sim_ca,
            rate_limit=spec.rate_limit,
            request_timeout=15.0,
            max_connections=max(100, spec.concurrency),
        ),
        credentials=CredentialsSettings(
            source="static",
            access_key_id=spec.access_key_id,
            access_key_secret_file=spec.access_key_secret_file,
        ),
        vault=VaultConfig(
            addr=spec.vault_addr,
            ca_cert=spec.vault_ca,
            token_file=spec.vault_token_file,
            root_path=spec.root_path,
            vnc_path=spec.vnc_path,
            runs_path=spec.runs_path,
            max_workers=spec.vault_workers,
        ),
        rotation=RotationSettings(concurrency=spec.concurrency),
        inventory=InventorySettings(source="vault"),
        source="bench",
    )


def _counting(call: Callable[..., Awaitable[Any]], counter: list[int]) -> Callable[..., Any]:
    async def counted(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return await call(*args, **kwargs)

    return counted


async def run(spec: Spec) -> Result:
    result = Result(name=spec.name, clusters=0)
    vault_ops = [0]
    probe = LagProbe()
    async with probe.running():
        with Meter() as meter:
            t0 = time.perf_counter()
            async with open_runtime(settings_for(spec)) as runtime:
                # Instrumentation only: count every Vault HTTP request the engine makes.
                setattr(runtime.vault, "request", _counting(runtime.vault.request, vault_ops))  # noqa: B010
                t1 = time.perf_counter()
                targets = await resolve_targets(runtime, Selection(all=True))
                t2 = time.perf_counter()
                summary = await runtime.rotate(targets, run_id=new_run_id())
                t3 = time.perf_counter()
    result.clusters = len(targets)
    result.phases = {"setup": t1 - t0, "inventory": t2 - t1, "rotate": t3 - t2}
    codes: Counter[str] = Counter()
    for outcome in summary.outcomes:
        if outcome.outcome is Outcome.ROTATED:
            result.ok += 1
        else:
            result.failed += 1
            codes[f"{outcome.outcome.value}:{outcome.code}"] += 1
    result.codes = dict(codes)
    result.wall_s = meter.wall_s
    result.cpu_s = meter.cpu_s
    result.started_at = meter.started_at
    result.finished_at = meter.finished_at
    result.peak_rss_mb = peak_rss_mb()
    result.lag_max_ms = probe.worst_ms
    result.lag_p99_ms = probe.p99_ms
    result.vault_ops = vault_ops[0]
    return result


def main() -> int:
    spec = Spec.load(Path(sys.argv[1]))
    configure_logging(level="info", fmt="json", stream=sys.stderr)
    result = asyncio.run(run(spec))
    print(result.to_json_line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
