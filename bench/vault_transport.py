"""``python -m bench.vault_transport``: the Vault KV hot path over hvac (thread pool) vs aiohttp
(event loop), client CPU per KV operation and per rotation, in one process run.

    python -m bench.vault_transport                    # 600 clusters, 3 rounds; ~3 minutes
    python -m bench.vault_transport --clusters 300 --rounds 2 --ops 500 --json out.json

1. OpenBao dev (TLS) as a subprocess.
2. KV operations, in this process: ``--ops`` each of kv_write (check-and-set), kv_read,
   kv_metadata and the custom-metadata patch, ``--concurrency`` in flight, per transport; process
   CPU (every thread) per operation.
3. Rotations: the simulator (TLS, 20 ms latency) and ``--clusters`` clusters; rotator rotates all
   of them in a fresh subprocess per transport (``bench.contender_transport``), each round on
   fresh vnc/pending paths so every run does the same work; client CPU per rotation, Vault
   requests per rotation, OpenBao CPU per rotation.

Rounds alternate the order of the transports, and the median of the rounds is reported, so the
load other processes put on the machine meets both alike. The verdict applies the rule of issue
14: the cheaper transport is worth the default only when it is cheaper by more than 20%.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.load import load_roots
from bench.procs import cpu_seconds, run_contender, start_sim
from bench.spec import Spec
from rotator.logs import configure_logging
from rotator.secret import Secret
from rotator.vault.client import VaultClient
from rotator.vault.devserver import OpenBaoServer, start_openbao
from rotator.vault.settings import VaultSettings

__all__ = ["main"]

TRANSPORTS = ("hvac", "aiohttp")
REGIONS = ["cn-hangzhou", "cn-shanghai", "cn-beijing"]
ACCESS_KEY_ID = "bench-access-key"
THRESHOLD = 0.20
"""The cheaper transport becomes the default only when it saves more than this much CPU."""


def _private(path: Path, value: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)
    return path


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _bounded(count: int, limit: int, make: Callable[[int], Awaitable[Any]]) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(i: int) -> None:
        async with gate:
            await make(i)

    await asyncio.gather(*(one(i) for i in range(count)))


async def _kv_ops(
    settings: VaultSettings, bao_pid: int, prefix: str, ops: int, concurrency: int
) -> dict[str, float]:
    """CPU microseconds per KV operation (this process, all threads), by kind."""
    out: dict[str, float] = {}
    async with VaultClient(settings) as client:
        await client.kv_write("secret", f"{prefix}/warm", {"password": "Ab12cd"})
        await client.kv_read("secret", f"{prefix}/warm")  # login, connections, imports warm
        kinds: dict[str, Callable[[int], Awaitable[Any]]] = {
            "write_cas": lambda i: client.kv_write(
                "secret", f"{prefix}/c-{i}", {"password": Secret("Ab12cd").reveal()}, cas=0
            ),
            "read": lambda i: client.kv_read("secret", f"{prefix}/c-{i}"),
            "metadata": lambda i: client.kv_metadata("secret", f"{prefix}/c-{i}"),
            "patch_status": lambda i: client.kv_patch_custom_metadata(
                "secret", f"{prefix}/c-{i}", {"status": "rotated", "attempts": "1"}
            ),
        }
        cpu_all = bao_all = wall_all = 0.0
        for kind, make in kinds.items():
            bao0, cpu0, wall0 = cpu_seconds(bao_pid), time.process_time(), time.perf_counter()
            await _bounded(ops, concurrency, make)
            cpu = time.process_time() - cpu0
            wall = time.perf_counter() - wall0
            bao = cpu_seconds(bao_pid) - bao0
            out[f"{kind}_cpu_us"] = 1e6 * cpu / ops
            cpu_all, bao_all, wall_all = cpu_all + cpu, bao_all + bao, wall_all + wall
        total = ops * len(kinds)
        out["all_cpu_us"] = 1e6 * cpu_all / total
        out["all_ops_per_s"] = total / wall_all if wall_all else 0.0
        out["vault_cpu_us"] = 1e6 * bao_all / total
    return out


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def _verdict(hvac: float, aio: float) -> str:
    if not hvac or not aio:
        return "no verdict (a measurement is missing)"
    saving = 1 - aio / hvac
    if saving > THRESHOLD:
        return f"aiohttp is cheaper by {100 * saving:.0f}% (> {100 * THRESHOLD:.0f}%)"
    if -saving > THRESHOLD:
        return f"hvac is cheaper by {100 * -saving:.0f}% (> {100 * THRESHOLD:.0f}%)"
    return f"within {100 * THRESHOLD:.0f}% ({100 * saving:+.0f}% for aiohttp): keep hvac"


class TransportBench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.secret_file = _private(workdir / "access-key-secret", secrets.token_urlsafe(24))
        self.admin_token_file = _private(workdir / "sim-admin-token", secrets.token_urlsafe(24))
        self.results: dict[str, Any] = {"kv": {t: [] for t in TRANSPORTS}}
        self.results["rotation"] = {t: [] for t in TRANSPORTS}
        self.results["load_average_before"] = os.getloadavg()[0]
        self.results["cpus"] = os.cpu_count()

    def order(self, round_no: int) -> tuple[str, ...]:
        return TRANSPORTS if round_no % 2 == 0 else TRANSPORTS[::-1]

    def run(self) -> dict[str, Any]:
        args = self.args
        with start_openbao(self.workdir / "openbao", tls=True) as bao:
            base = VaultSettings(
                addr=bao.addr,
                ca_cert=str(bao.ca_cert),
                token=bao.root_token,
                max_workers=args.vault_workers,
            )
            self.token_file = _private(self.workdir / "vault-token", bao.root_token.reveal())
            _say(f"OpenBao dev (TLS) at {bao.addr}")
            if args.ops:
                self._kv(bao, base)
            if args.clusters:
                self._rotations(bao, base)
        return self.results

    def _kv(self, bao: OpenBaoServer, base: VaultSettings) -> None:
        args = self.args
        _say(f"KV operations: {args.ops} of each kind, {args.concurrency} in flight")
        for round_no in range(args.rounds):
            for transport in self.order(round_no):
                settings = dataclasses.replace(base, transport=transport)  # type: ignore[arg-type]
                prefix = f"kvbench/{round_no}-{transport}"
                row = asyncio.run(
                    _kv_ops(settings, bao.process.pid, prefix, args.ops, args.concurrency)
                )
                self.results["kv"][transport].append(row)
                _say(
                    f"  round {round_no + 1} {transport:>7}: {row['all_cpu_us']:.0f} us CPU per "
                    f"op ({row['all_ops_per_s']:.0f} ops/s; OpenBao {row['vault_cpu_us']:.0f} us)"
                )

    def _rotations(self, bao: OpenBaoServer, base: VaultSettings) -> None:
        args = self.args
        with start_sim(
            self.workdir,
            clusters=args.clusters,
            regions=REGIONS,
            latency_ms=args.latency_ms,
            jitter_ms=0.0,
            access_key_id=ACCESS_KEY_ID,
            secret_file=self.secret_file,
            admin_token_file=self.admin_token_file,
        ) as sim:
            clusters = sim.clusters()
            asyncio.run(load_roots(base, clusters, root_path="ehpc/root"))
            _say(f"rotations: {len(clusters)} clusters, concurrency {args.concurrency}")
            for round_no in range(args.rounds):
                for transport in self.order(round_no):
                    tag = f"{round_no}-{transport}"
                    spec = Spec(
                        name=f"transport-{tag}",
                        vault_addr=bao.addr,
                        vault_ca=str(bao.ca_cert),
                        vault_token_file=str(self.token_file),
                        sim_base_url=sim.base_url,
                        sim_ca=str(sim.ca_file),
                        access_key_id=ACCESS_KEY_ID,
                        access_key_secret_file=str(self.secret_file),
                        regions=REGIONS,
                        vnc_path=f"vt/{tag}/vnc",
                        runs_path=f"vt/{tag}/runs",
                        concurrency=args.concurrency,
                        vault_workers=args.vault_workers,
                        mode=transport,
                    )
                    bao0 = cpu_seconds(bao.process.pid)
                    result, _ = run_contender("bench.contender_transport", spec, self.workdir)
                    bao_cpu = cpu_seconds(bao.process.pid) - bao0
                    done = max(result.done, 1)
                    row = {
                        "ok": float(result.ok),
                        "failed": float(result.failed),
                        "cpu_ms_per_rotation": result.cpu_ms_per_rotation,
                        "rotations_per_s": result.per_second,
                        "vault_requests_per_rotation": result.vault_ops / done,
                        "vault_cpu_ms_per_rotation": 1000 * bao_cpu / done,
                        "lag_max_ms": result.lag_max_ms,
                        "lag_p99_ms": result.lag_p99_ms,
                        "inventory_s": result.phases.get("inventory", 0.0),
                        "rotate_s": result.phases.get("rotate", 0.0),
                        "peak_rss_mb": result.peak_rss_mb,
                    }
                    self.results["rotation"][transport].append(row)
                    self.results.setdefault("failure_codes", {})[tag] = result.codes
                    _say(
                        f"  round {round_no + 1} {transport:>7}: {result.ok} ok "
                        f"{result.failed} failed, {row['cpu_ms_per_rotation']:.2f} ms CPU per "
                        f"rotation, {row['rotations_per_s']:.0f}/s, "
                        f"{row['vault_requests_per_rotation']:.1f} Vault requests each"
                    )


def render(results: dict[str, Any]) -> str:
    lines = [
        "",
        "Vault KV transport: hvac (thread pool) vs aiohttp (event loop), medians of the rounds",
        f"machine: {results['cpus']} CPUs, 1-minute load average "
        f"{results['load_average_before']:.1f} before the run",
    ]
    kv = results["kv"]
    if kv["hvac"] and kv["aiohttp"]:
        lines.append("")
        lines.append(f"{'client CPU per KV op (us)':<34}{'hvac':>10}{'aiohttp':>10}{'ratio':>8}")
        for key in ("write_cas", "read", "metadata", "patch_status", "all"):
            h, a = _median(kv["hvac"], f"{key}_cpu_us"), _median(kv["aiohttp"], f"{key}_cpu_us")
            lines.append(f"  {key:<32}{h:>10.0f}{a:>10.0f}{a / h:>8.2f}")
        h, a = _median(kv["hvac"], "all_ops_per_s"), _median(kv["aiohttp"], "all_ops_per_s")
        lines.append(f"  {'throughput (ops/s)':<32}{h:>10.0f}{a:>10.0f}{a / h:>8.2f}")
        h, a = _median(kv["hvac"], "vault_cpu_us"), _median(kv["aiohttp"], "vault_cpu_us")
        lines.append(f"  {'OpenBao CPU per op (us)':<32}{h:>10.0f}{a:>10.0f}{a / h:>8.2f}")
        lines.append(
            "  verdict (KV op): "
            + _verdict(_median(kv["hvac"], "all_cpu_us"), _median(kv["aiohttp"], "all_cpu_us"))
        )
    rot = results["rotation"]
    if rot["hvac"] and rot["aiohttp"]:
        lines.append("")
        lines.append(f"{'per rotation':<34}{'hvac':>10}{'aiohttp':>10}{'ratio':>8}")
        for key, label in (
            ("cpu_ms_per_rotation", "client CPU (ms)"),
            ("rotations_per_s", "throughput (/s)"),
            ("vault_requests_per_rotation", "Vault requests"),
            ("vault_cpu_ms_per_rotation", "OpenBao CPU (ms)"),
            ("lag_p99_ms", "p99 loop lag (ms)"),
            ("lag_max_ms", "worst loop lag (ms)"),
            ("inventory_s", "inventory phase (s)"),
            ("rotate_s", "rotate phase (s)"),
            ("peak_rss_mb", "peak RSS (MB)"),
            ("failed", "failed rotations"),
        ):
            h, a = _median(rot["hvac"], key), _median(rot["aiohttp"], key)
            ratio = f"{a / h:>8.2f}" if h else f"{'-':>8}"
            lines.append(f"  {label:<32}{h:>10.2f}{a:>10.2f}{ratio}")
        lines.append(
            "  verdict (rotation): "
            + _verdict(
                _median(rot["hvac"], "cpu_ms_per_rotation"),
                _median(rot["aiohttp"], "cpu_ms_per_rotation"),
            )
        )
    codes = {code for found in results.get("failure_codes", {}).values() for code in found}
    if codes:
        lines.append(f"  failures by code (both transports): {', '.join(sorted(codes))}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.vault_transport", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--clusters", type=int, default=600, help="rotations per run (600)")
    parser.add_argument("--ops", type=int, default=1000, help="KV operations per kind (1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per transport (3)")
    parser.add_argument("--concurrency", type=int, default=64, help="in flight (64)")
    parser.add_argument("--vault-workers", type=int, default=16, help="hvac threads (16)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="simulated API latency")
    parser.add_argument("--json", type=Path, help="also write every raw number to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(level="warning", fmt="json", stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="rotator-vault-transport-") as tmp:
        results = TransportBench(args, Path(tmp)).run()
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
