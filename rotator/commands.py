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
from typing import Any, Self

import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from rotator.config import Settings
from rotator.engine.inventory import Selection, resolve_targets
from rotator.engine.ports import NoHooks
from rotator.engine.report import ClusterOutcome, Outcome
from rotator.engine.runtime import new_run_id, open_runtime
from rotator.errors import ConfigError
from rotator.passwords import VaultPasswordSource, verify
from rotator.vault.store import parse_time

__all__ = ["demo", "plan", "rotate", "serve", "status", "vault_setup"]

log = structlog.get_logger("rotator.cli")


def _selection(args: argparse.Namespace) -> Selection:
    selection = Selection(
        all=args.all,
        clusters=list(args.cluster),
        regions=list(args.region),
        exclude=list(args.exclude),
        discover=args.discover,
    )
    selection.check()
    return selection


def _writable(path: Path) -> bool:
    """Could ``write_report`` create ``path``? (The nearest existing folder decides.)"""
    folder = path.parent.resolve()
    while not folder.exists():
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK) and not path.is_dir()


def write_report(path: Path, text: str) -> None:
    """Atomically: a crash mid-write never leaves half a report for a script to misread."""
    path.parent.mkdir(parents=True, exist_ok=True)
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
        self._progress = Progress(
            TextColumn("[bold]rotating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>6.1f}/s"),
            TextColumn("[red]{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
            transient=False,
        )
        self._task = self._progress.add_task("rotate", total=total, rate=0.0, failed=0)
        self._failed = 0
        self._started = datetime.now(UTC)
        self._done = 0

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

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
    if args.report and not _writable(args.report):
        # Found out before rotating, not after: the summary must not be lost.
        raise ConfigError(f"cannot write the report to {args.report}", key="--report")
    async with open_runtime(settings, check_passwords=not args.dry_run) as runtime:
        targets = await resolve_targets(runtime, selection)
        if args.dry_run:
            return await _print_plan(runtime, targets, as_json=args.json)
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
            )
    if args.report:
        try:
            write_report(args.report, summary.to_json())
        except OSError as exc:
            log.error("report_not_written", path=str(args.report), reason=exc.strerror)
    if args.json:
        print(summary.to_json())
    else:
        Console().print(summary.table())
        print(
            f"Summary stored in Vault at {settings.vault.kv_mount}/{settings.vault.runs_path}/"
            f"{run_id}"
        )
    return summary.exit_code


async def _print_plan(runtime: Any, targets: list[Any], *, as_json: bool) -> int:
    now = datetime.now(UTC)
    limit = asyncio.Semaphore(runtime.settings.vault.max_workers)

    async def one(target: Any) -> dict[str, Any]:
        async with limit:
            state = await runtime.store.read_vnc(target.cluster_id)
        next_due = parse_time(state.custom_metadata.get("next_rotation_at"))
        if target.status not in (None, "running"):
            action, why = "skip", f"cluster is {target.status}"
        elif state.pending_password is not None:
            action, why = "rotate", "a pending password from an earlier run (re-applied as is)"
        elif not state.exists:
            action, why = "rotate", "never rotated"
        elif next_due is not None and next_due <= now:
            action, why = "rotate", f"due since {next_due:%Y-%m-%d %H:%M}Z"
        elif next_due is not None:
            action, why = "rotate", f"not due until {next_due:%Y-%m-%d %H:%M}Z (forced by rotate)"
        else:
            action, why = "rotate", "no due time recorded"
        return {
            "cluster_id": target.cluster_id,
            "region": target.region,
            "action": action,
            "reason": why,
        }

    rows = list(await asyncio.gather(*(one(t) for t in targets)))
    if as_json:
        print(json.dumps({"clusters": rows, "total": len(rows)}, indent=2))
        return 0
    table = Table(title=f"Plan: {len(rows)} clusters (nothing is changed)")
    for column in ("cluster", "region", "action", "why"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["cluster_id"], row["region"], row["action"], row["reason"])
    Console().print(table)
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
        return await _print_plan(runtime, targets, as_json=args.json)


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
        metadata = await runtime.store.list_vnc_metadata()
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
    Console().print(table)
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
        await verify(VaultPasswordSource(runtime.store, settings.passwords.policy))
        print(f"password policy {settings.passwords.policy}: generates passwords the API accepts")
    return result.exit_code


async def demo(args: argparse.Namespace, stop: asyncio.Event) -> int:
    from rotator.demo import run_demo  # noqa: PLC0415

    return await run_demo(clusters=args.clusters, keep=args.keep, stop=stop)
