"""What each CLI command does once its arguments are parsed: wire, call the engine, print.

Summaries and tables go to stdout; logs and the progress bar go to stderr, so
``rotator rotate --all --json > run.json`` captures just the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self, TextIO

import structlog

from rotator.config import Settings
from rotator.engine.due import Decision, decide
from rotator.engine.inventory import Selection, resolve_targets
from rotator.engine.ports import NoHooks
from rotator.engine.report import ClusterOutcome, Outcome
from rotator.engine.runtime import new_run_id, open_runtime
from rotator.errors import ConfigError
from rotator.leases.cron import lease_state, settle_lease_ends, with_lease_ends
from rotator.logs import quiet_cluster_events
from rotator.passwords import VaultPasswordSource, rule_named, verify
from rotator.vault.store import VncState, parse_time

if TYPE_CHECKING:
    from rich.console import Console

    from rotator.engine.rotation import Target
    from rotator.engine.runtime import Runtime

__all__ = ["console", "demo", "plan", "rotate", "serve", "status", "vault_setup"]

log = structlog.get_logger("rotator.cli")

EXIT_EMPTY = 4
"""A run that found no cluster at all (unless --allow-empty): an empty answer is not an empty
fleet (a wrong root_path, a proxy answering 200 with nothing)."""

# Off a terminal nothing is wrapped or cut: IDs stay whole for grep and scripts.
_UNLIMITED_WIDTH = 100_000


def console(stream: TextIO | None = None) -> Console:
    """A rich console for people on a terminal; plain, unwrapped lines anywhere else.

    rich itself honours NO_COLOR and turns colour off when the stream is not a terminal.
    """
    from rich.console import Console  # noqa: PLC0415 - rich is heavy; only printing needs it

    out = stream or sys.stdout
    tty = out.isatty()
    return Console(
        file=out,
        width=None if tty else _UNLIMITED_WIDTH,
        soft_wrap=not tty,
        highlight=False,
    )


def _selection(args: argparse.Namespace) -> Selection:
    selection = Selection(
        # --region alone means every cluster of those regions
        all=args.all or bool(args.region and not args.cluster),
        clusters=list(args.cluster),
        regions=list(args.region),
        exclude=list(args.exclude),
        discover=args.discover,
    )
    selection.check()
    return selection


def _check_report_path(path: Path) -> None:
    """Refuse, before rotating, a report that could not be written: the summary must not be lost.
    The folder must exist already: a typo must not create directories."""
    folder = path.parent
    if not folder.is_dir():
        raise ConfigError(f"folder {folder} does not exist (create it first)", key="--report")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a file", key="--report")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"folder {folder} is not writable", key="--report")


def write_report(path: Path, text: str) -> None:
    """Atomically: a crash mid-write never leaves half a report for a script to misread."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ProgressHooks(NoHooks):
    """A progress bar on a terminal: done/total, rate, ETA; failures counted as they come."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        from rich.progress import (  # noqa: PLC0415 - rich is heavy; only a terminal needs it
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._enabled = enabled
        self._quiet = quiet_cluster_events(enabled)
        self._progress = Progress(
            TextColumn("[bold]rotating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>6.1f}/s"),
            TextColumn("[red]{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console(sys.stderr),
            disable=not enabled,
            transient=False,
            # Warnings still print above the bar (rare); per-cluster info lines are not printed
            # while it shows (quiet_cluster_events), so they never make it re-render.
            redirect_stderr=True,
            redirect_stdout=False,
        )
        self._task = self._progress.add_task("rotate", total=total, rate=0.0, failed=0)
        self._failed = 0
        self._started = datetime.now(UTC)
        self._done = 0

    def __enter__(self) -> Self:
        self._quiet.__enter__()
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()
        self._quiet.__exit__(exc_type, exc, tb)

    def outcome(self, outcome: ClusterOutcome) -> None:
        self._done += 1
        if outcome.outcome in (Outcome.FAILED, Outcome.COMMIT_FAILED):
            self._failed += 1
        elapsed = max((datetime.now(UTC) - self._started).total_seconds(), 1e-6)
        self._progress.update(self._task, advance=1, rate=self._done / elapsed, failed=self._failed)


async def rotate(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    selection = _selection(args)
    if args.concurrency is not None and args.concurrency < 1:
        raise ConfigError("--concurrency must be >= 1")
    if args.report:
        _check_report_path(args.report)
    async with open_runtime(settings, check_passwords=False) as runtime:
        if not args.dry_run:
            # First, before Vault is even asked: without credentials no cluster can rotate.
            await runtime.check_credentials()
            await verify(runtime.passwords)
        targets = await resolve_targets(runtime, selection)
        if not targets and not args.allow_empty:
            return _refuse_empty(settings, selection)
        # Check-out leases: a cluster whose last lease ended is rotated unless done since; one
        # with an open lease is held (CheckedOut) unless --force.
        leases = await lease_state(runtime.vault, write=not args.dry_run)  # a plan writes nothing
        lease_ends = leases.owed
        targets = with_lease_ends(targets, lease_ends, leases.held)
        if args.dry_run:
            return await _print_plan(runtime, targets, as_json=args.json, force=args.force)
        run_id = new_run_id()
        show_progress = sys.stderr.isatty() and not args.no_progress and not args.json
        with ProgressHooks(len(targets), enabled=show_progress) as progress:
            runtime.hooks = progress
            summary = await runtime.rotate(
                targets,
                run_id=run_id,
                stop=stop,
                max_failures=args.max_failures,
                concurrency=args.concurrency,
                skip_not_due=not args.force,
            )
        await settle_lease_ends(runtime.vault, summary, lease_ends)
    if args.report:
        try:
            write_report(args.report, summary.to_json())
        except OSError as exc:
            log.error("report_not_written", path=str(args.report), reason=exc.strerror)
    if args.json:
        print(summary.to_json())
    else:
        vault = settings.vault
        out = console()
        out.print(summary.table(root_path=f"{vault.kv_mount}/{vault.root_path}"))
        out.print(f"Summary stored in Vault at {vault.kv_mount}/{vault.runs_path}/{run_id}")
    return summary.exit_code


def _refuse_empty(settings: Settings, selection: Selection) -> int:
    source = "ListClusters" if selection.discover else settings.inventory.source
    where = {
        "vault": f"Vault under {settings.vault.kv_mount}/{settings.vault.root_path}/",
        "config": "the config file's [inventory] clusters",
    }.get(source, "ListClusters in the configured regions")
    filters = " after --region/--exclude" if selection.regions or selection.exclude else ""
    print(
        f"rotator: no cluster found in {where}{filters}; nothing was rotated "
        "(pass --allow-empty if an empty fleet is expected)",
        file=sys.stderr,
    )
    return EXIT_EMPTY


async def decisions(
    runtime: Runtime, targets: list[Target], *, force: bool
) -> list[tuple[Target, Decision]]:
    """What ``rotate`` with the same flags would do with each target (reads, never writes)."""
    now = datetime.now(UTC)
    limit = asyncio.Semaphore(runtime.settings.vault.max_workers)
    period = runtime.settings.rotation.period

    async def one(target: Target) -> tuple[Target, Decision]:
        if target.status not in (None, "running"):  # rotate skips these without reading
            return target, decide(
                target, VncState(target.cluster_id), now=now, default_period=period
            )
        async with limit:
            # No migration: an old-layout secret is shown as it is, not rewritten.
            state = await runtime.store.read_vnc(target.cluster_id, migrate=False)
        return target, decide(target, state, now=now, default_period=period, force=force)

    return list(await asyncio.gather(*(one(t) for t in targets)))


async def _print_plan(
    runtime: Runtime, targets: list[Target], *, as_json: bool, force: bool
) -> int:
    rows = [
        {
            "cluster_id": target.cluster_id,
            "region": target.region,
            "action": decision.action,
            "code": decision.code,
            "reason": decision.reason,
        }
        for target, decision in await decisions(runtime, targets, force=force)
    ]
    if as_json:
        print(json.dumps({"clusters": rows, "total": len(rows)}, indent=2))
        return 0
    from rich.table import Table  # noqa: PLC0415

    rotating = sum(1 for row in rows if row["action"] == "rotate")
    table = Table(
        title=f"Plan: {rotating} of {len(rows)} clusters would rotate (nothing is changed)"
    )
    for column in ("cluster", "region", "action", "why"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["cluster_id"]), str(row["region"]), str(row["action"]), str(row["reason"])
        )
    console().print(table)
    return 0


async def plan(settings: Settings, args: argparse.Namespace) -> int:
    selection = (
        _selection(args)
        if (args.all or args.cluster)
        else Selection(
            all=True, regions=list(args.region), exclude=list(args.exclude), discover=args.discover
        )
    )
    async with open_runtime(settings, check_passwords=False) as runtime:
        targets = await resolve_targets(runtime, selection)
        if not targets:
            print("rotator: no cluster found; a rotate would find none", file=sys.stderr)
        # As rotate sees check-out leases (ended ones rotate, open ones hold); nothing written.
        leases = await lease_state(runtime.vault, write=False)
        targets = with_lease_ends(targets, leases.owed, leases.held)
        return await _print_plan(runtime, targets, as_json=args.json, force=args.force)


def _age(value: str | None, now: datetime) -> str:
    when = parse_time(value)
    if when is None:
        return "-"
    seconds = (now - when).total_seconds()
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


async def status(settings: Settings, args: argparse.Namespace) -> int:
    async with open_runtime(settings, check_passwords=False) as runtime:
        # in_flight: a run killed after it staged leaves the committed password maybe stale.
        metadata = await runtime.store.list_vnc_metadata(in_flight=True)
    now = datetime.now(UTC)
    rows: list[dict[str, str | bool | None]] = []
    for cluster_id, meta in sorted(metadata.items()):
        due = parse_time(meta.get("next_rotation_at"))
        rows.append(
            {
                "cluster_id": cluster_id,
                "status": meta.get("status", "-"),
                "password_age": _age(meta.get("last_rotated_at"), now),
                "last_rotated_at": meta.get("last_rotated_at"),
                "next_rotation_at": meta.get("next_rotation_at"),
                "overdue": due is not None and due <= now,
                "last_error_code": meta.get("last_error_code") or None,
                "last_request_id": meta.get("last_request_id") or None,
            }
        )
    if args.json:
        print(json.dumps({"clusters": rows}, indent=2))
        return 0
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"{len(rows)} clusters in Vault")
    for column in ("cluster", "status", "age", "next due", "last error", "last request"):
        table.add_column(column)
    for row in rows:
        next_due = str(row["next_rotation_at"] or "-")
        table.add_row(
            str(row["cluster_id"]),
            str(row["status"]),
            str(row["password_age"]),
            f"[red]{next_due} (overdue)[/red]" if row["overdue"] else next_due,
            str(row["last_error_code"] or ""),
            str(row["last_request_id"] or ""),
        )
    console().print(table)
    return 0


async def serve(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from rotator.serve import run_daemon  # noqa: PLC0415 - only the daemon needs it

    return await run_daemon(settings, stop=stop, config_path=args.config)


def _read_pem(path: str | None) -> str | None:
    """``--kubernetes-ca-cert`` names a PEM file; Vault wants its text."""
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror}", key="--kubernetes-ca-cert"
        ) from None


async def vault_setup(settings: Settings, args: argparse.Namespace) -> int:
    from rotator.vault.setup import run_setup  # noqa: PLC0415

    async with open_runtime(settings, check_passwords=False) as runtime:
        result = await run_setup(
            runtime.vault,
            runtime.vault.settings,
            force=args.force,
            dry_run=args.dry_run,
            password_policy=settings.passwords.policy,
            password_policy_file=rule_named(settings.passwords.rule).policy_file,
            approle_mount=args.approle_mount,
            kubernetes_host=args.kubernetes_host,
            kubernetes_namespace=args.kubernetes_namespace,
            kubernetes_ca_cert=_read_pem(args.kubernetes_ca_cert),
            kubernetes_mount=args.kubernetes_mount,
            events=args.events,
            trigger_path=settings.serve.trigger_path,
            approle_token_period=3600 if args.agent else None,
        )
        for line in result.lines():
            print(line)
        if args.dry_run:
            return result.exit_code
        # Setup cannot judge the passwords a policy makes; the API's rule can.
        rule = rule_named(settings.passwords.rule)
        await verify(VaultPasswordSource(runtime.store, settings.passwords.policy, rule=rule))
        print(f"password policy {settings.passwords.policy}: generates passwords the API accepts")
    return result.exit_code


async def demo(args: argparse.Namespace, stop: asyncio.Event) -> int:
    from rotator.demo import run_demo  # noqa: PLC0415

    return await run_demo(clusters=args.clusters, keep=args.keep, stop=stop)
