"""``make bench`` / ``python -m bench.run``: rotator against the official SDK, ratios from one run.

    python -m bench.run                        # the full bench: about 5 minutes on 2 busy cores
    python -m bench.run --quick                # a smaller fleet and a 10/5s quota: a smoke test
    python -m bench.run --rounds 5             # the two CPU ratios as medians of 5 rounds (3)
    python -m bench.run --json out.json        # also write every raw number
    python -m bench.run --profile prof/        # py-spy the rotator contender (pip install py-spy)

1. OpenBao dev (TLS) and the simulator (TLS, 20 ms latency, no faults) as subprocesses; the
   clusters' root passwords are written to Vault with hvac, at the documented layout.
2. Unthrottled, the same clusters for everyone: rotator with ``vault.transport = "hvac"`` (the
   Vault KV calls in a thread pool) right before rotator with its default (aiohttp on the event
   loop), for the transport comparison (``--skip transport`` leaves it out); rotator
   (``rotator rotate --all`` with a config file, its public interface), the SDK script under
   asyncio.gather with a CA store holding just the simulator's CA; rotator again under a
   pseudo-terminal (progress bar) for the terminal/plain ratio.
3. Binding limit: rotator at a per-region rate chosen below the throughput it just showed; the
   simulator's per-second counts say how close it came and whether it ever went over. Then the
   SDK script with the system CA store, the slow one (``--with-loop``: also the sequential SDK
   loop). Runs compared by a target follow each other: the load of a shared machine drifts.
4. Quota: a per-minute quota (``--quota``, default 100/60s) at rotator, over more than one
   window; utilisation, windows over the quota, and the simulator's Throttling answers.
5. Rounds (``--rounds``, 3; 1 with ``--quick``): the plain, terminal and binding-limit rotator
   runs again, at the same limit, each round in an order rotated by one (plain, tty, binding;
   then binding, plain, tty; ...) so the load's drift favours none; the two CPU ratios (terminal
   / plain, binding / unthrottled) are judged on their median over the rounds.
6. Peak RSS of rotator over 10,000 clusters (another simulator, 0-5 ms latency), alongside the
   quota case, which mostly waits on its limiter (``--rss-apart``: after it).

Every contender is measured from outside, over the window of its work, with OpenBao's request
counter and the CPU of OpenBao and the simulator sampled at the same instants (bench/procs.py).
A contender that fails is reported as such and the rest still runs and prints. Exits 0 even
when a target is missed (a benchmark reports; it does not fail CI); 1 if the bench itself could
not run, 130 on Ctrl-C. Every subprocess and temporary file is gone when it returns.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from bench.contender_rotator import (
    RUN_FINISHED,
    RUN_STARTED,
    RotatorConfig,
    read_report,
    rotate_argv,
)
from bench.load import load_roots
from bench.procs import (
    ROOT,
    ChildRun,
    Probe,
    SimProcess,
    child_env,
    run_child,
    start_sim,
    stop_children,
)
from bench.profile import py_spy_wrapper, summarise
from bench.quota import Quota, analyse_quota
from bench.ratecheck import analyse
from bench.report import Contender, Report, Round, render
from bench.spec import MARK_END, MARK_START, Spec, parse_result
from bench.vaultcount import VaultRequests
from rotator import RotatorError
from rotator.vault.devserver import start_openbao

__all__ = ["main"]

ACCESS_KEY_ID = "bench-access-key"
MODIFY = "ModifyVisualServicePasswd"
ROUND_RUNS = ("plain", "tty", "binding")


def round_order(number: int, runs: Sequence[str] = ROUND_RUNS) -> tuple[str, ...]:
    """The order of round ``number`` (1-based): round 1 as listed, each next one rotated by one.

    plain, tty, binding; then binding, plain, tty; then tty, binding, plain: each run goes
    first, in the middle and last once every three rounds.
    """
    if not runs:
        return ()
    shift = (number - 1) % len(runs)
    return (*runs[len(runs) - shift :], *runs[: len(runs) - shift])


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    clusters: int
    regions: tuple[str, ...]
    with_loop: bool
    loop_clusters: int
    rate_share: float
    rate_seconds: float
    quota: str
    quota_extra: float
    quota_sim_args: tuple[str, ...]
    rss_clusters: int
    rss_apart: bool
    concurrency: int
    vault_workers: int
    latency_ms: float
    timeout_s: float
    skip: tuple[str, ...] = ()
    rounds: int = 1

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        quick = args.quick
        return cls(
            clusters=200 if quick else args.clusters,
            regions=tuple(r.strip() for r in args.regions.split(",") if r.strip()),
            with_loop=args.with_loop,
            loop_clusters=args.loop_clusters,
            rate_share=args.rate_share,
            rate_seconds=4.0 if quick else args.rate_seconds,
            quota="10/5s" if quick and args.quota == _DEFAULT_QUOTA else args.quota,
            quota_extra=args.quota_extra,
            quota_sim_args=tuple(args.quota_sim_arg),
            rss_clusters=500 if quick else args.rss_clusters,
            rss_apart=args.rss_apart,
            concurrency=args.concurrency,
            vault_workers=args.vault_workers,
            latency_ms=args.latency_ms,
            timeout_s=args.timeout,
            skip=tuple(args.skip),
            rounds=args.rounds if args.rounds is not None else (1 if quick else 3),
        )


def _private(path: Path, value: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)
    return path


def _round_robin(clusters: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """``count`` clusters with equal shares per region (as far as the fleet allows)."""
    by_region: dict[str, list[dict[str, Any]]] = {}
    for cluster in clusters:
        by_region.setdefault(str(cluster["region"]), []).append(cluster)
    chosen: list[dict[str, Any]] = []
    queues = [iter(v) for v in by_region.values()]
    while len(chosen) < count and queues:
        for queue in list(queues):
            item = next(queue, None)
            if item is None:
                queues.remove(queue)
            elif len(chosen) < count:
                chosen.append(item)
    return chosen


class Bench:
    def __init__(self, plan: Plan, workdir: Path, *, profile_dir: Path | None) -> None:
        self.plan = plan
        self.workdir = workdir
        self.profile_dir = profile_dir
        self.secret_file = _private(workdir / "access-key-secret", secrets.token_urlsafe(24))
        self.admin_token_file = _private(workdir / "sim-admin-token", secrets.token_urlsafe(24))
        self.report = Report(plan=dataclasses.asdict(plan), cpus=os.cpu_count() or 0)
        self._binding: tuple[int, int] | None = None
        """The binding limit per region and the clusters of round 1 (loaded at ratecheck/root)."""

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def run(self) -> Report:
        self.report.load_before = os.getloadavg()
        try:
            with start_openbao(self.workdir / "openbao", tls=True) as bao:
                self.bao = bao
                self.token = bao.root_token.reveal()
                self.token_file = _private(self.workdir / "vault-token", self.token)
                self.vault_requests = VaultRequests(bao.addr, bao.ca_cert, self.token)
                self.say(f"OpenBao dev (TLS) at {bao.addr}")
                self._stage("fleet", self._fleet)
                self._stage("quota and rss", self._quota_and_big_fleet)
        finally:
            self.report.load_after = os.getloadavg()
        return self.report

    def _stage(self, name: str, body: Callable[[], None]) -> None:
        """A stage that breaks (a simulator that will not start) is a note; the rest runs."""
        try:
            body()
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            self.report.notes += ["", f"stage {name!r} could not run: {exc}"]
            self.say(f"  stage {name} could not run: {exc}")

    @contextmanager
    def _sim(
        self,
        clusters: int,
        *,
        latency_ms: float,
        jitter_ms: float,
        label: str,
        extra_args: Sequence[str] = (),
    ) -> Iterator[SimProcess]:
        with start_sim(
            self.workdir,
            clusters=clusters,
            regions=list(self.plan.regions),
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            access_key_id=ACCESS_KEY_ID,
            secret_file=self.secret_file,
            admin_token_file=self.admin_token_file,
            extra_args=extra_args,
            label=label,
        ) as sim:
            yield sim

    def _probe(self, sim: SimProcess) -> Probe:
        return Probe(
            sim_pid=sim.pid, vault_pid=self.bao.process.pid, vault_requests=self.vault_requests
        )

    def _load(self, clusters: list[dict[str, Any]], root_path: str) -> None:
        self.say(f"  writing {len(clusters)} root passwords to Vault at secret/{root_path} ...")
        load_roots(self.bao.addr, self.bao.ca_cert, self.token, clusters, root_path=root_path)

    # -- contenders ------------------------------------------------------------------------

    def _rotator(
        self,
        label: str,
        sim: SimProcess,
        *,
        clusters: int,
        root_path: str,
        rate_limit: str = "100000/1s",
        use_pty: bool = False,
        wrapper: list[str] | None = None,
        vault_transport: str | None = None,
    ) -> Contender:
        key = label.replace(" ", "-").replace(",", "").replace("/", "-")
        config = RotatorConfig(
            vault_addr=self.bao.addr,
            vault_ca=str(self.bao.ca_cert),
            vault_token_file=str(self.token_file),
            sim_base_url=sim.base_url,
            sim_ca=str(sim.ca_file),
            access_key_id=ACCESS_KEY_ID,
            access_key_secret_file=str(self.secret_file),
            regions=self.plan.regions,
            root_path=root_path,
            vnc_path=f"bench/{key}/vnc",
            runs_path=f"bench/{key}/runs",
            rate_limit=rate_limit,
            concurrency=self.plan.concurrency,
            vault_workers=self.plan.vault_workers,
            vault_transport=vault_transport,
        ).write(self.workdir / f"{key}.toml")
        report_path = self.workdir / f"{key}-report.json"
        self.say(f"  {label}: running ...")
        run = run_child(
            [*(wrapper or []), *rotate_argv(config, report=report_path)],
            name=key,
            workdir=self.workdir,
            probe=self._probe(sim),
            markers=[RUN_STARTED, RUN_FINISHED],
            use_pty=use_pty,
            timeout=self.plan.timeout_s,
        )
        contender = Contender(
            label=label,
            clusters=clusters,
            work=run.span(RUN_STARTED, RUN_FINISHED),
            before=run.span("launch", RUN_STARTED),
            after=run.span(RUN_FINISHED, "exit"),
            whole=run.span("launch", "exit"),
            peak_rss_mb=run.peak_rss_mb,
            error=run.error,
        )
        outcome = read_report(report_path)
        if outcome is None and contender.error is None:
            contender.error = f"exit code {run.exit_code} and no run summary"
        if outcome is not None:
            contender.done, contender.rotated, contender.codes = (
                outcome.total,
                outcome.rotated,
                outcome.codes,
            )
        return self._finish(contender, run)

    def _sdk(
        self, label: str, sim: SimProcess, ids: list[str], *, mode: str, one_cert: bool
    ) -> Contender:
        key = label.replace(" ", "-").replace(",", "")
        spec = Spec(
            name=key,
            vault_addr=self.bao.addr,
            vault_ca=str(self.bao.ca_cert),
            vault_token_file=str(self.token_file),
            sim_base_url=sim.base_url,
            sim_ca=str(sim.ca_file),
            access_key_id=ACCESS_KEY_ID,
            access_key_secret_file=str(self.secret_file),
            regions=list(self.plan.regions),
            vnc_path=f"bench/{key}/vnc",
            cluster_ids=ids,
            concurrency=self.plan.concurrency,
            mode=mode,
        )
        spec_path = spec.dump(self.workdir / f"spec-{key}.json")
        extra_env: dict[str, str] = {}
        if one_cert:
            # The SDK's per-call ssl.create_default_context() loads the default verify paths:
            # point them at the simulator's CA alone (and an empty folder).
            empty = self.workdir / "empty-ca-dir"
            empty.mkdir(exist_ok=True)
            extra_env = {"SSL_CERT_FILE": str(sim.ca_file), "SSL_CERT_DIR": str(empty)}
        self.say(f"  {label}: running ...")
        run = run_child(
            [sys.executable, "-m", "bench.contender_sdk", str(spec_path)],
            name=key,
            workdir=self.workdir,
            probe=self._probe(sim),
            markers=[MARK_START, MARK_END],
            extra_env=extra_env,
            timeout=self.plan.timeout_s,
        )
        contender = Contender(
            label=label,
            clusters=len(ids),
            work=run.span(MARK_START, MARK_END),
            before=run.span("launch", MARK_START),
            after=run.span(MARK_END, "exit"),
            whole=run.span("launch", "exit"),
            peak_rss_mb=run.peak_rss_mb,
            error=run.error,
        )
        result = parse_result(run.stdout)
        if result is None and contender.error is None:
            contender.error = f"exit code {run.exit_code} and no result line"
        if result is not None:
            contender.done, contender.rotated, contender.codes = (
                result.done,
                result.ok,
                result.codes,
            )
            contender.lag_max_ms = result.lag_max_ms
        return self._finish(contender, run)

    def _finish(self, contender: Contender, run: ChildRun) -> Contender:
        if contender.error is not None:
            contender.log_tail = run.log_tail()
            self.say(f"  {contender.label}: died: {contender.error}")
        else:
            self.say(
                f"  {contender.label}: {contender.done} clusters in "
                f"{contender.work.wall_s if contender.work else 0:.1f} s "
                f"({contender.per_second:.0f}/s, {contender.cpu_ms or 0:.2f} ms CPU each, "
                f"peak RSS {contender.peak_rss_mb:.0f} MB)"
            )
        return contender

    # -- stages ----------------------------------------------------------------------------

    def _fleet(self) -> None:
        plan = self.plan
        with self._sim(
            plan.clusters, latency_ms=plan.latency_ms, jitter_ms=0.0, label="main"
        ) as sim:
            self.say(
                f"simulator (TLS, {plan.latency_ms:g} ms latency) with {plan.clusters} clusters "
                f"at {sim.base_url}"
            )
            clusters = sim.clusters()
            ids = [str(c["id"]) for c in clusters]
            self._load(clusters, "ehpc/root")
            # The runs compared by a target follow each other closely (the load on a shared
            # machine drifts by the minute): rotator, the one-cert SDK script, rotator on a
            # terminal, the binding limit; the slow system-CA SDK script last.
            self.say("unthrottled, the same clusters for every contender:")
            if "transport" not in plan.skip:
                # Right before the default run it is compared with (the load drifts).
                self._transport(sim, ids)
            self._unthrottled(sim, ids)
            baselines = "baselines" not in plan.skip
            if baselines:
                self._baseline("sdk_one_cert", "SDK, one-cert CA", sim, ids, one_cert=True)
            if "tty" not in plan.skip:
                self.report.tty = self._tty_run("rotator on a terminal", sim, ids)
            if "ratelimit" not in plan.skip:
                self._rate_limit(sim, clusters)
            if baselines:
                self._baseline("sdk_system_ca", "SDK, system CA", sim, ids, one_cert=False)
                if plan.with_loop:
                    self.report.contenders["sdk_loop"] = self._sdk(
                        "SDK loop", sim, ids[: plan.loop_clusters], mode="loop", one_cert=False
                    )
            self._more_rounds(sim, ids)

    def _plain_run(
        self, label: str, sim: SimProcess, ids: list[str], *, wrapper: list[str] | None = None
    ) -> Contender:
        return self._rotator(label, sim, clusters=len(ids), root_path="ehpc/root", wrapper=wrapper)

    def _tty_run(self, label: str, sim: SimProcess, ids: list[str]) -> Contender:
        return self._rotator(label, sim, clusters=len(ids), root_path="ehpc/root", use_pty=True)

    def _binding_run(
        self, label: str, sim: SimProcess, *, wrapper: list[str] | None = None
    ) -> Contender | None:
        if self._binding is None:
            return None
        limit, count = self._binding
        return self._rotator(
            label,
            sim,
            clusters=count,
            root_path="ratecheck/root",
            rate_limit=f"{limit}/1s",
            wrapper=wrapper,
        )

    def _more_rounds(self, sim: SimProcess, ids: list[str]) -> None:
        """Rounds 2..N of the runs behind the two CPU ratios; one run is within +-15% here.

        Every run gets its own label, hence its own vnc and runs paths in Vault: each starts
        from the state round 1's did (nothing rotated there yet), from the same roots.
        """
        plan = self.plan
        runs = [
            name
            for name, wanted in (
                ("plain", "rotator" in self.report.contenders),
                ("tty", self.report.tty is not None),
                ("binding", self._binding is not None),
            )
            if wanted
        ]
        if plan.rounds < 2 or "plain" not in runs or len(runs) < 2:
            return
        for number in range(2, plan.rounds + 1):
            order = round_order(number, runs)
            self.say(f"round {number} of {plan.rounds}: {', '.join(order)}")
            each = Round(order=order)
            self.report.more_rounds.append(each)
            for name in order:
                if name == "plain":
                    each.plain = self._plain_run(f"rotator, round {number}", sim, ids)
                elif name == "tty":
                    each.tty = self._tty_run(f"rotator on a terminal, round {number}", sim, ids)
                else:
                    each.limited = self._binding_run(f"rotator, binding limit, round {number}", sim)

    def _baseline(
        self, key: str, label: str, sim: SimProcess, ids: list[str], *, one_cert: bool
    ) -> None:
        self.report.contenders[key] = self._sdk(label, sim, ids, mode="gather", one_cert=one_cert)

    def _unthrottled(self, sim: SimProcess, ids: list[str]) -> None:
        wrapper, samples = self._profiler("rotator-py-spy.txt")
        contenders = self.report.contenders
        contenders["rotator"] = self._plain_run("rotator", sim, ids, wrapper=wrapper)
        self._profile_note("the rotator run", samples)

    def _profiler(self, name: str) -> tuple[list[str] | None, Path | None]:
        """With ``--profile``: the py-spy prefix and its samples file (else None, None)."""
        if self.profile_dir is None:
            return None, None
        samples = self.profile_dir / name
        wrapper = py_spy_wrapper(samples)
        if wrapper is None:
            self.say("  --profile needs py-spy: .venv/bin/pip install py-spy")
            return None, None
        return wrapper, samples

    def _profile_note(self, what: str, samples: Path | None) -> None:
        if samples is None or not samples.is_file():
            return
        self.report.notes += [
            "",
            f"profile of {what} (py-spy; its numbers above include py-spy's overhead; raw "
            f"samples in {samples}):",
            summarise(samples),
        ]

    def _transport(self, sim: SimProcess, ids: list[str]) -> None:
        """The same fleet with ``vault.transport = "hvac"`` (the KV calls in a thread pool)."""
        self.report.contenders["rotator_hvac"] = self._rotator(
            "rotator, hvac", sim, clusters=len(ids), root_path="ehpc/root", vault_transport="hvac"
        )

    def _rate_limit(self, sim: SimProcess, clusters: list[dict[str, Any]]) -> None:
        plan = self.plan
        free = self.report.contenders.get("rotator")
        if free is None or not free.ok:
            self.report.notes += ["", "binding limit: skipped (no unthrottled rotator run)"]
            return
        regions = len(plan.regions)
        limit = max(1, math.floor(plan.rate_share * free.per_second / regions))
        count = min(len(clusters), max(regions * 4, round(limit * regions * plan.rate_seconds)))
        self.report.rate_choice = (
            f"{plan.rate_share:g} of the {free.per_second:.0f}/s rotator reached unthrottled in "
            f"this run, split over {regions} regions; {count} clusters"
        )
        self.say(f"binding limit: {limit}/1s per region, {count} clusters")
        subset = _round_robin(clusters, count)
        self._load(subset, "ratecheck/root")
        self._binding = (limit, count)
        sim.reset_stats()
        wrapper, samples = self._profiler("rotator-binding-py-spy.txt")
        self.report.limited = self._binding_run("rotator, binding limit", sim, wrapper=wrapper)
        self._profile_note("the rotator run at the binding limit", samples)
        by_region = sim.stats().get("accepted_by_region", {}).get(MODIFY, {})
        self.report.rate = analyse(by_region, limit=limit)

    def _quota_and_big_fleet(self) -> None:
        """The RSS check runs alongside the quota case, which mostly waits on its limiter.

        That keeps ``make bench`` near five minutes on a busy machine, and it is the harder
        test for the quota: its windows must hold while another process keeps the CPU busy.
        ``--rss-apart`` runs them one after the other instead.
        """
        plan = self.plan
        if "rss" in plan.skip or "quota" in plan.skip or plan.rss_apart:
            if "quota" not in plan.skip:
                self._stage("quota", self._quota)
            if "rss" not in plan.skip:
                self._stage("rss", self._big_fleet)
            return
        with self._sim(plan.rss_clusters, latency_ms=0.0, jitter_ms=5.0, label="big") as big:
            clusters = big.clusters()
            failed: list[str] = []

            def side() -> None:
                try:
                    self._load(clusters, "big/root")
                    self.say(f"RSS: {plan.rss_clusters} clusters (0-5 ms latency), alongside")
                    self.report.big = self._rotator(
                        "rotator, big fleet", big, clusters=len(clusters), root_path="big/root"
                    )
                except (RuntimeError, OSError, ValueError) as exc:  # reported by the main thread
                    failed.append(str(exc))

            worker = threading.Thread(target=side, name="rss-check", daemon=True)
            worker.start()
            try:
                self._stage("quota", self._quota)
            except BaseException:
                stop_children()  # Ctrl-C: the side run must not outlive the bench
                raise
            finally:
                worker.join()
            if failed:
                raise RuntimeError(f"the RSS check could not run: {failed[0]}")
        self.report.notes += [
            "",
            "the RSS check ran alongside the quota case (--rss-apart runs them apart), so its "
            "rotations/s and CPU are a busy machine's, and so is the quota case's CPU.",
        ]

    def _big_fleet(self) -> None:
        plan = self.plan
        with self._sim(plan.rss_clusters, latency_ms=0.0, jitter_ms=5.0, label="big") as sim:
            self.say(f"RSS: simulator with {plan.rss_clusters} clusters (0-5 ms latency)")
            clusters = sim.clusters()
            self._load(clusters, "big/root")
            self.report.big = self._rotator(
                "rotator, big fleet", sim, clusters=len(clusters), root_path="big/root"
            )

    def _quota(self) -> None:
        plan = self.plan
        quota = Quota.parse(plan.quota)
        # round(): 100 * 1.1 is 110.00000000000001 in binary floating point
        per_region = math.ceil(round(quota.calls * (1.0 + plan.quota_extra), 6))
        count = per_region * len(plan.regions)
        sim_args = plan.quota_sim_args or _sim_quota_args(quota)
        self.report.quota_note = (
            f"the simulator enforces it ({' '.join(sim_args)})"
            if sim_args
            else "this simulator cannot enforce it (no --quota flag): windows over the quota "
            "are counted from its per-second counts"
        )
        with self._sim(
            count,
            latency_ms=plan.latency_ms,
            jitter_ms=0.0,
            label="quota",
            extra_args=sim_args,
        ) as sim:
            self.say(
                f"quota: {quota} per region, {per_region} clusters per region (more than one "
                f"window: about {per_region * quota.period_s / quota.calls:.0f} s)"
            )
            clusters = sim.clusters()
            self._load(clusters, "quota/root")
            sim.reset_stats()
            self.report.quota_run = run = self._rotator(
                "rotator, quota", sim, clusters=count, root_path="quota/root", rate_limit=str(quota)
            )
            stats = sim.stats()
            if run.ok:
                self.report.quota = analyse_quota(
                    stats.get("accepted_by_region", {}).get(MODIFY, {}),
                    quota=quota,
                    throttled=int(stats.get("throttled", {}).get(MODIFY, 0)),
                )


_DEFAULT_QUOTA = "100/60s"


def _sim_quota_args(quota: Quota) -> tuple[str, ...]:
    """``--quota ACTION=N/Ps`` (per region endpoint) if this simulator's CLI offers it."""
    try:
        shown = subprocess.run(
            [sys.executable, "-m", "rotator.sim", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=child_env(),
            cwd=ROOT,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return (f"--quota={MODIFY}={quota}",) if "--quota" in shown else ()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--clusters", type=int, default=1000, help="fleet size (default 1000)")
    parser.add_argument(
        "--regions", default="cn-hangzhou,cn-shanghai,cn-beijing", help="comma-separated"
    )
    parser.add_argument("--quick", action="store_true", help="a small fleet: a smoke test")
    parser.add_argument(
        "--rounds",
        type=_positive,
        help="rounds of the plain, terminal and binding-limit runs; the two CPU ratios are "
        "their medians (3; 1 with --quick)",
    )
    parser.add_argument(
        "--rss-clusters", type=int, default=10_000, help="fleet for the RSS check (10000)"
    )
    parser.add_argument(
        "--rss-apart", action="store_true", help="run the RSS check after the quota case"
    )
    parser.add_argument("--with-loop", action="store_true", help="also the sequential SDK loop")
    parser.add_argument(
        "--loop-clusters", type=int, default=200, help="clusters for the SDK loop (200)"
    )
    parser.add_argument(
        "--rate-share",
        type=float,
        default=0.5,
        help="binding limit = this share of the unthrottled throughput just measured (0.5)",
    )
    parser.add_argument(
        "--rate-seconds", type=float, default=8.0, help="length of the binding-limit run (8)"
    )
    parser.add_argument(
        "--quota", default=_DEFAULT_QUOTA, help="per-region quota for the quota case (100/60s)"
    )
    parser.add_argument(
        "--quota-extra",
        type=float,
        default=0.1,
        help="clusters per region beyond one window's quota, as a share (0.1)",
    )
    parser.add_argument(
        "--quota-sim-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="passed to the quota case's simulator instead of --quota=ModifyVisualServicePasswd="
        "<quota> (which is passed when the simulator offers it); repeatable",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="rotations in flight (64)")
    parser.add_argument("--vault-workers", type=int, default=16, help="rotator's Vault threads")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="simulated API latency")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds before a contender is killed"
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["baselines", "transport", "tty", "ratelimit", "quota", "rss"],
        help="leave out a part (repeatable), e.g. to profile rotator alone",
    )
    parser.add_argument("--json", type=Path, help="also write every raw number to this file")
    parser.add_argument(
        "--profile",
        type=Path,
        help="sample the rotator runs (unthrottled, binding) with py-spy into this folder",
    )
    return parser


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        Quota.parse(args.quota)
    except ValueError as exc:
        print(f"bench: --quota: {exc}", file=sys.stderr)
        return 2
    plan = Plan.from_args(args)
    # SIGTERM unwinds like Ctrl-C, so every `with` stops what it started.
    previous: Callable[[int, FrameType | None], Any] | int | None = signal.signal(
        signal.SIGTERM, _raise_interrupt
    )
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="rotator-bench-") as tmp:
            report = Bench(plan, Path(tmp), profile_dir=args.profile).run()
    except KeyboardInterrupt:
        stop_children()
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, RotatorError) as exc:  # e.g. no `bao` binary
        print(f"bench could not run: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
