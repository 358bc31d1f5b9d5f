"""``make bench`` / ``python -m bench.run``: rotator against the official SDK, ratios from one run.

    python -m bench.run                        # 2,000 clusters; about 2.5 minutes on 2 cores
    python -m bench.run --quick                # 300 clusters, a smoke test
    python -m bench.run --json out.json        # also write every raw number
    python -m bench.run --profile prof/        # py-spy the rotator contender (pip install py-spy)

1. OpenBao dev (TLS) and the simulator (TLS, 20 ms latency, no faults) as subprocesses;
   the clusters' root passwords are loaded into Vault.
2. Unthrottled: rotator, the SDK in a sequential loop, the SDK under asyncio.gather; each in a
   fresh subprocess that measures its own wall time, CPU time, peak RSS and event-loop lag.
3. Binding limit: rotator at 50/1s per region; the simulator's per-second counts say how close
   it came to the limit and whether it ever went over.
4. Peak RSS of rotator over 10,000 clusters (a second simulator, 0-5 ms latency).

Exits 0 even when a target is missed (a benchmark reports; it does not fail CI); 1 if something
crashed, 130 on Ctrl-C. Every subprocess and temporary file is gone when it returns.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bench.load import load_roots
from bench.procs import SimProcess, cpu_seconds, run_contender, start_sim
from bench.profile import py_spy_wrapper, summarise
from bench.ratecheck import analyse
from bench.report import Measured, Report, render
from bench.spec import Spec
from rotator.logs import configure_logging
from rotator.vault.devserver import OpenBaoServer, start_openbao
from rotator.vault.settings import VaultSettings

__all__ = ["main"]

REGIONS = ["cn-hangzhou", "cn-shanghai", "cn-beijing"]
ACCESS_KEY_ID = "bench-access-key"
MODIFY = "ModifyVisualServicePasswd"


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    clusters: int
    loop_clusters: int
    gather_clusters: int
    rate_clusters: int
    rate_limit: int
    rss_clusters: int
    concurrency: int
    vault_workers: int
    latency_ms: float
    skip: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        clusters = 300 if args.quick else args.clusters
        return cls(
            clusters=clusters,
            loop_clusters=min(clusters, 60 if args.quick else args.loop_clusters),
            gather_clusters=min(clusters, 300 if args.quick else args.gather_clusters),
            rate_clusters=min(clusters, 450 if args.quick else args.rate_clusters),
            rate_limit=args.rate_limit,
            rss_clusters=1000 if args.quick else args.rss_clusters,
            concurrency=args.concurrency,
            vault_workers=args.vault_workers,
            latency_ms=args.latency_ms,
            skip=tuple(args.skip),
        )


def _private(path: Path, value: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)
    return path


class Bench:
    def __init__(self, plan: Plan, workdir: Path, *, profile_dir: Path | None) -> None:
        self.plan = plan
        self.workdir = workdir
        self.profile_dir = profile_dir
        self.secret_file = _private(workdir / "access-key-secret", secrets.token_urlsafe(24))
        self.admin_token_file = _private(workdir / "sim-admin-token", secrets.token_urlsafe(24))
        self.report = Report(plan=dataclasses.asdict(plan))

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def run(self) -> Report:
        busy = os.getloadavg()[0]
        if busy > 1.0:
            self.report.notes += [
                "",
                f"note: the 1-minute load average was {busy:.1f} before the bench started; other "
                "processes were competing for the CPU, so the numbers above are pessimistic.",
            ]
        with start_openbao(self.workdir / "openbao", tls=True) as bao:
            self.token_file = _private(self.workdir / "vault-token", bao.root_token.reveal())
            self.vault_settings = VaultSettings(
                addr=bao.addr, ca_cert=str(bao.ca_cert), token=bao.root_token, max_workers=16
            )
            self.say(f"OpenBao dev (TLS) at {bao.addr}")
            self._fleet(bao)
            if "rss" not in self.plan.skip:
                self._big_fleet(bao)
        return self.report

    def _sim(self, clusters: int, latency_ms: float, jitter_ms: float) -> Any:
        return start_sim(
            self.workdir,
            clusters=clusters,
            regions=REGIONS,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            access_key_id=ACCESS_KEY_ID,
            secret_file=self.secret_file,
            admin_token_file=self.admin_token_file,
        )

    def _spec(self, name: str, sim: SimProcess, bao: OpenBaoServer, **overrides: Any) -> Spec:
        values: dict[str, Any] = {
            "name": name,
            "vault_addr": bao.addr,
            "vault_ca": str(bao.ca_cert),
            "vault_token_file": str(self.token_file),
            "sim_base_url": sim.base_url,
            "sim_ca": str(sim.ca_file),
            "access_key_id": ACCESS_KEY_ID,
            "access_key_secret_file": str(self.secret_file),
            "regions": REGIONS,
            "concurrency": self.plan.concurrency,
            "vault_workers": self.plan.vault_workers,
        }
        values.update(overrides)
        return Spec(**values)

    def _measure(
        self,
        module: str,
        spec: Spec,
        sim: SimProcess,
        bao: OpenBaoServer,
        *,
        wrapper: list[str] | None = None,
    ) -> Measured:
        """Run one contender, with the simulator's and OpenBao's CPU over the same span."""
        self.say(f"  {spec.name}: running ...")
        sim_cpu, bao_cpu = cpu_seconds(sim.pid), cpu_seconds(bao.process.pid)
        result, outside_s = run_contender(module, spec, self.workdir, wrapper=wrapper)
        measured = Measured(
            result=result,
            sim_cpu_s=cpu_seconds(sim.pid) - sim_cpu,
            vault_cpu_s=cpu_seconds(bao.process.pid) - bao_cpu,
            outside_s=outside_s,
        )
        self.say(
            f"  {spec.name}: {result.done} clusters in {result.wall_s:.1f} s "
            f"({result.per_second:.0f}/s, {result.cpu_ms_per_rotation:.1f} ms CPU each, "
            f"peak RSS {result.peak_rss_mb:.0f} MB)"
        )
        return measured

    def _fleet(self, bao: OpenBaoServer) -> None:
        plan = self.plan
        with self._sim(plan.clusters, plan.latency_ms, 0.0) as sim:
            self.say(
                f"simulator (TLS, {plan.latency_ms:g} ms latency) with {plan.clusters} clusters "
                f"at {sim.base_url}"
            )
            clusters = sim.clusters()
            rate_set = clusters[: plan.rate_clusters]  # round-robin: equal shares per region
            self.say("loading root passwords into Vault ...")
            asyncio.run(load_roots(self.vault_settings, clusters, root_path="ehpc/root"))
            if "ratelimit" not in plan.skip:
                asyncio.run(load_roots(self.vault_settings, rate_set, root_path="ratecheck/root"))
            self.say("unthrottled (rate limit far above what anything reaches):")
            self._rotator(sim, bao)
            if "baselines" not in plan.skip:
                self._baselines(sim, bao, [str(c["id"]) for c in clusters])
            if "ratelimit" not in plan.skip:
                self._rate_limit(sim, bao, len(rate_set))

    def _rotator(self, sim: SimProcess, bao: OpenBaoServer) -> None:
        wrapper = None
        if self.profile_dir is not None:
            samples = self.profile_dir / "rotator-py-spy.txt"
            wrapper = py_spy_wrapper(samples)
            if wrapper is None:
                self.say("  --profile needs py-spy: .venv/bin/pip install py-spy")
        spec = self._spec("rotator", sim, bao)
        self.report.rotator = self._measure(
            "bench.contender_rotator", spec, sim, bao, wrapper=wrapper
        )
        if wrapper is not None:
            self.report.notes += [
                "",
                "profile of the rotator run (py-spy; the numbers above include its overhead; "
                f"raw samples in {samples}):",
                summarise(samples),
            ]

    def _baselines(self, sim: SimProcess, bao: OpenBaoServer, ids: list[str]) -> None:
        plan = self.plan
        for name, mode, count in (
            ("sdk_loop", "loop", plan.loop_clusters),
            ("sdk_gather", "gather", plan.gather_clusters),
        ):
            spec = self._spec(
                name, sim, bao, mode=mode, cluster_ids=ids[:count], vnc_path="sdk/vnc"
            )
            measured = self._measure("bench.contender_sdk", spec, sim, bao)
            setattr(self.report, name, measured)

    def _rate_limit(self, sim: SimProcess, bao: OpenBaoServer, count: int) -> None:
        limit = self.plan.rate_limit
        self.say(f"binding limit: {limit}/1s per region, {count} clusters")
        sim.reset_stats()
        spec = self._spec(
            "rotator_limited",
            sim,
            bao,
            rate_limit=f"{limit}/1s",
            root_path="ratecheck/root",
            vnc_path="ratecheck/vnc",
            runs_path="ratecheck/runs",
        )
        self.report.limited = self._measure("bench.contender_rotator", spec, sim, bao)
        by_region = sim.stats().get("accepted_by_region", {}).get(MODIFY, {})
        self.report.rate = analyse(by_region, limit=limit)

    def _big_fleet(self, bao: OpenBaoServer) -> None:
        plan = self.plan
        with self._sim(plan.rss_clusters, 0.0, 5.0) as sim:
            self.say(f"RSS: simulator with {plan.rss_clusters} clusters (0-5 ms latency)")
            clusters = sim.clusters()
            self.say("loading root passwords into Vault ...")
            asyncio.run(load_roots(self.vault_settings, clusters, root_path="big/root"))
            self.report.big = self._measure(
                "bench.contender_rotator",
                self._spec(
                    "rotator_big",
                    sim,
                    bao,
                    root_path="big/root",
                    vnc_path="big/vnc",
                    runs_path="big/runs",
                ),
                sim,
                bao,
            )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--clusters", type=int, default=2000, help="fleet size (default 2000)")
    parser.add_argument("--quick", action="store_true", help="300 clusters: a smoke test")
    parser.add_argument(
        "--rss-clusters", type=int, default=10_000, help="fleet for the RSS check (10000)"
    )
    parser.add_argument(
        "--loop-clusters", type=int, default=200, help="clusters for the sequential SDK loop"
    )
    parser.add_argument(
        "--gather-clusters", type=int, default=1000, help="clusters for the SDK under gather"
    )
    parser.add_argument(
        "--rate-clusters", type=int, default=900, help="clusters for the rate-limit check"
    )
    parser.add_argument("--rate-limit", type=int, default=50, help="calls/s per region (50)")
    parser.add_argument("--concurrency", type=int, default=64, help="rotations in flight (64)")
    parser.add_argument("--vault-workers", type=int, default=16, help="rotator's Vault threads")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="simulated API latency")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["baselines", "ratelimit", "rss"],
        help="leave out a part (repeatable), e.g. to profile rotator alone",
    )
    parser.add_argument("--json", type=Path, help="also write every raw number to this file")
    parser.add_argument(
        "--profile", type=Path, help="sample the rotator run with py-spy into this folder"
    )
    return parser


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = Plan.from_args(args)
    # SIGTERM unwinds like Ctrl-C, so every `with` stops what it started.
    previous: Callable[[int, FrameType | None], Any] | int | None = signal.signal(
        signal.SIGTERM, _raise_interrupt
    )
    # Only our own progress lines on stderr; the contenders' logs go to their own files.
    configure_logging(level="warning")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="rotator-bench-") as tmp:
            report = Bench(plan, Path(tmp), profile_dir=args.profile).run()
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as exc:
        print(f"bench crashed: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
