"""The ``rotator`` command line. It parses, wires and prints; the work happens in the engine.

    rotator rotate --all                 # rotate every cluster in the inventory
    rotator rotate --cluster ehpc-hz-1 --cluster ehpc-hz-2 --dry-run
    rotator plan                         # what would rotate, and why; changes nothing
    rotator status                       # per cluster: password age, next due, last outcome
    rotator serve                        # the daemon (lease expiry, Vault events, webhooks)
    rotator sim --clusters 200           # the E-HPC simulator
    rotator demo                         # OpenBao + simulator + a real rotation, end to end
    rotator vault-setup                  # policies, password policy and auth roles, idempotent
    rotator doctor                       # preflight: Vault, Alibaba Cloud, passwords; no change

Exit codes: 0 Success, 3 PartFailure, 4 Failure, 2 configuration or usage error,
130/143 interrupted by SIGINT/SIGTERM (after in-flight rotations finished and the report was
written).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import structlog

from rotator.config import CONFIG_ENV, DEFAULT_CONFIG_PATH, Settings, load_settings
from rotator.errors import ConfigError, RotatorError
from rotator.logs import configure_logging

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_INTERNAL = 1

log = structlog.get_logger("rotator.cli")


def _selection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("which clusters")
    group.add_argument("--all", action="store_true", help="every cluster in the inventory")
    group.add_argument(
        "--cluster", action="append", default=[], metavar="ID", help="only this cluster (repeat)"
    )
    group.add_argument(
        "--region", action="append", default=[], metavar="REGION", help="only this region"
    )
    group.add_argument(
        "--exclude", action="append", default=[], metavar="ID", help="never this cluster"
    )
    group.add_argument(
        "--discover",
        action="store_true",
        help="find clusters with ListClusters in each configured region (else: inventory.source)",
    )


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML config file (default: $ROTATOR_CONFIG, else /etc/rotator/rotator.toml if "
        "it exists, else built-in defaults + environment)",
    )
    parser.add_argument("--log-level", default=None, help="debug, info, warning, error")
    parser.add_argument(
        "--log-format", choices=["auto", "json", "console"], default=None, help="log rendering"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rotator",
        description="Rotate the VNC passwords of Alibaba Cloud E-HPC clusters into Vault.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rotate = sub.add_parser("rotate", help="rotate VNC passwords now")
    _common_arguments(rotate)
    _selection_arguments(rotate)
    rotate.add_argument("--dry-run", action="store_true", help="show what would rotate; no change")
    rotate.add_argument("--report", type=Path, help="write the JSON run summary to this file")
    rotate.add_argument("--max-failures", help="stop starting clusters after N or N%% failures")
    rotate.add_argument("--concurrency", type=int, help="rotations in flight at once")
    rotate.add_argument("--json", action="store_true", help="print the summary as JSON")
    rotate.add_argument(
        "--no-progress", action="store_true", help="no progress bar even on a terminal"
    )

    plan = sub.add_parser("plan", help="what would rotate and why; changes nothing")
    _common_arguments(plan)
    _selection_arguments(plan)
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")

    status = sub.add_parser("status", help="per cluster: password age, next due, last outcome")
    _common_arguments(status)
    status.add_argument("--json", action="store_true", help="print as JSON")

    serve = sub.add_parser("serve", help="run the rotation daemon")
    _common_arguments(serve)

    setup = sub.add_parser("vault-setup", help="apply policies, password policy and auth roles")
    _common_arguments(setup)
    setup.add_argument(
        "--kubernetes-host", help="also configure Kubernetes auth against this API server"
    )
    setup.add_argument(
        "--kubernetes-namespace", default="rotator", help="namespace of the rotator SA"
    )
    setup.add_argument(
        "--kubernetes-ca-cert",
        help="PEM file of the Kubernetes API server's CA (with --kubernetes-host)",
    )
    # Safe on a shared Vault: what differs is shown and left alone unless --force.
    setup.add_argument(
        "--dry-run", action="store_true", help="print the plan (what differs); change nothing"
    )
    setup.add_argument(
        "--force",
        action="store_true",
        help="overwrite auth configs, roles and policies that differ",
    )
    setup.add_argument(
        "--events",
        action="store_true",
        help="also grant Vault Enterprise event subscriptions (policy rotator-events)",
    )
    setup.add_argument(
        "--agent",
        action="store_true",
        help="AppRole tokens are periodic (1h, no max TTL) for a Vault Agent to renew",
    )
    setup.add_argument(
        "--approle-mount", help="AppRole auth mount path (default vault.approle_mount)"
    )
    setup.add_argument(
        "--kubernetes-mount", help="Kubernetes auth mount path (default vault.kubernetes_mount)"
    )

    # doctor: a read-only preflight (rotator/doctor.py owns the checks and the command).
    doctor = sub.add_parser("doctor", help="check Vault, Alibaba Cloud and passwords; no change")
    _common_arguments(doctor)
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")

    sim = sub.add_parser("sim", help="run the E-HPC API simulator")
    from rotator import sim as sim_module  # noqa: PLC0415 - keeps `rotator rotate` start-up lean

    sim_module.add_arguments(sim)

    demo = sub.add_parser("demo", help="OpenBao + simulator + a real rotation, end to end")
    demo.add_argument("--clusters", type=int, default=200)
    demo.add_argument("--keep", action="store_true", help="keep OpenBao and the simulator up")
    demo.add_argument("--log-level", default="warning")
    return parser


def _load(args: argparse.Namespace) -> Settings:
    path: Path | None = args.config
    if path is None and not os.environ.get(CONFIG_ENV) and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    return load_settings(path)


def _run_async(
    factory: Callable[[asyncio.Event], Coroutine[Any, Any, int]],
    *,
    signal_exit_codes: bool = True,
) -> int:
    """Run a command with SIGINT/SIGTERM turned into a graceful stop, then 130/143.

    A daemon (``serve``) drains on SIGTERM as its normal way to end, so it exits 0 instead.
    """

    async def runner() -> int:
        stop = asyncio.Event()
        received: list[int] = []
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            received.append(signum)
            if len(received) == 1:
                log.warning(
                    "stopping",
                    signal=signal.Signals(signum).name,
                    detail="no new clusters start; in-flight rotations finish",
                )
                stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            code = await factory(stop)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        if received and signal_exit_codes:
            return 128 + received[0]
        return code

    return asyncio.run(runner())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"rotator: configuration error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except RotatorError as exc:
        print(f"rotator: {exc}", file=sys.stderr)
        return 4


def _dispatch(args: argparse.Namespace) -> int:
    from rotator import commands  # noqa: PLC0415 - heavy imports only after parsing

    command: str = args.command
    if command == "sim":
        from rotator import sim as sim_module  # noqa: PLC0415

        return sim_module.run(args)
    if command == "demo":
        configure_logging(level=args.log_level, fmt="auto")
        # With --keep, Ctrl-C is how the demo is meant to end.
        return _run_async(lambda stop: commands.demo(args, stop), signal_exit_codes=not args.keep)
    settings = _load(args)
    configure_logging(
        level=args.log_level or settings.logging.level,
        fmt=args.log_format or settings.logging.format,
    )
    handlers: dict[str, Callable[[asyncio.Event], Coroutine[Any, Any, int]]] = {
        "rotate": lambda stop: commands.rotate(settings, args, stop),
        "plan": lambda stop: commands.plan(settings, args),
        "status": lambda stop: commands.status(settings, args),
        "serve": lambda stop: commands.serve(settings, args, stop),
        "vault-setup": lambda stop: commands.vault_setup(settings, args),
        "doctor": lambda stop: _doctor(settings, args),
    }
    return _run_async(handlers[command], signal_exit_codes=command != "serve")


async def _doctor(settings: Settings, args: argparse.Namespace) -> int:
    from rotator.doctor import doctor_command  # noqa: PLC0415 - only doctor needs it

    return await doctor_command(settings, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
