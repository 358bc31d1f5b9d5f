"""The ``rotator`` command line. It parses, wires and prints; the work happens in the engine.

    rotator rotate --all                 # rotate every cluster that is due (NotDue: skipped)
    rotator rotate --cluster ehpc-hz-1 --force   # now, due or not
    rotator rotate --cluster ehpc-hz-1 --cluster ehpc-hz-2 --dry-run
    rotator plan                         # what rotate would do, and why; changes nothing
    rotator status                       # per cluster: password age, next due, last outcome
    rotator serve                        # the daemon (lease expiry, Vault events, webhooks)
    rotator sim --clusters 200           # the E-HPC simulator
    rotator demo                         # OpenBao + simulator + a real rotation, end to end
    rotator vault-setup                  # policies, password policy and auth roles, idempotent
    rotator checkout ehpc-hz-1 --ttl 2h  # check a VNC password out (leases, renew, checkin)
    rotator doctor                       # preflight: Vault, Alibaba Cloud, passwords; no change

Global options (--config, --log-level, --log-format) go before or after the command.
Exit codes: 0 Success, 3 PartFailure, 4 Failure (also: no credentials, no cluster found),
2 configuration or usage error,
130/143 interrupted by SIGINT/SIGTERM (after in-flight rotations finished and the report was
written).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rotator.errors import ConfigError, RotatorError

if TYPE_CHECKING:
    import asyncio

    from rotator.config import Settings

    Handler = Callable[[Settings, argparse.Namespace, asyncio.Event], Coroutine[Any, Any, int]]

# Only the standard library and rotator.errors load before parsing: `rotator --help` must not
# pay for aiohttp, hvac, rich or structlog (issue 10: imports took ~2 s).

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_FAILURE = 4
EXIT_INTERNAL = 1

LOG_LEVELS = ("debug", "info", "warning", "error")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("rotator")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


class _VersionAction(argparse.Action):
    """``--version``, resolved only when asked (importlib.metadata is not free)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"rotator {_version()}")
        parser.exit()


def _log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def _global_arguments(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options every command takes, before or after the subcommand.

    The top-level parser holds the defaults; a subcommand's copy defaults to SUPPRESS so that
    ``rotator --config f status`` keeps ``f`` (a subparser default would overwrite it).
    """
    default: Any = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--config",
        type=Path,
        default=default,
        help="TOML config file (default: $ROTATOR_CONFIG, else /etc/rotator/rotator.toml if "
        "it exists, else built-in defaults + environment)",
    )
    parser.add_argument(
        "--log-level", type=_log_level, default=default, help="debug, info, warning, error"
    )
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=default,
        help="log rendering (auto: console on a terminal, JSON lines elsewhere)",
    )


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
    parser.add_argument(
        "--force",
        action="store_true",
        help="rotate the chosen clusters even if they are not due (an incident, someone left)",
    )


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The command line. Each subcommand is one block here and one handler in ``_HANDLERS``."""
    parser = argparse.ArgumentParser(
        prog="rotator",
        description="Rotate the VNC passwords of Alibaba Cloud E-HPC clusters into Vault.",
        epilog="Exit codes: 0 Success, 3 PartFailure, 4 Failure, 2 configuration or usage error.",
    )
    parser.add_argument("--version", action=_VersionAction)
    _global_arguments(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        _global_arguments(sub_parser, top=False)
        return sub_parser

    rotate = command("rotate", "rotate the VNC passwords that are due (--force: all chosen)")
    _selection_arguments(rotate)
    rotate.add_argument("--dry-run", action="store_true", help="show what would rotate; no change")
    rotate.add_argument(
        "--report", type=Path, help="write the JSON run summary to this file (folder must exist)"
    )
    rotate.add_argument("--max-failures", help="stop starting clusters after N or N%% failures")
    rotate.add_argument("--concurrency", type=int, help="rotations in flight at once")
    rotate.add_argument("--json", action="store_true", help="print the summary as JSON")
    rotate.add_argument(
        "--no-progress", action="store_true", help="no progress bar even on a terminal"
    )
    rotate.add_argument(
        "--allow-empty",
        action="store_true",
        help="exit 0 when no cluster is found (default: that is an error, exit 4)",
    )

    plan = command("plan", "what rotate would do with the same flags, and why; changes nothing")
    _selection_arguments(plan)
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")

    status = command("status", "per cluster: password age, next due, last outcome")
    status.add_argument("--json", action="store_true", help="print as JSON")

    command("serve", "run the rotation daemon")

    setup = command("vault-setup", "apply policies, password policy and auth roles")
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
    doctor = command("doctor", "check Vault, Alibaba Cloud and passwords; no change")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")

    # The simulator has its own options (and its own --log-level); they are loaded only when
    # asked for, because they import the simulator's web server.
    sim = sub.add_parser("sim", help="run the E-HPC API simulator")
    if "sim" in argv:
        from rotator import sim as sim_module  # noqa: PLC0415

        sim_module.add_arguments(sim)

    from rotator.leases import cli as lease_cli  # noqa: PLC0415 - argparse only, no I/O

    lease_cli.add_arguments(sub)  # checkout, leases, renew, checkin (talk to rotator serve)

    demo = command("demo", "OpenBao + simulator + a real rotation, end to end")
    demo.add_argument("--clusters", type=int, default=200)
    demo.add_argument("--keep", action="store_true", help="keep OpenBao and the simulator up")
    return parser


def _load(args: argparse.Namespace) -> Settings:
    from rotator.config import (  # noqa: PLC0415
        CONFIG_ENV,
        DEFAULT_CONFIG_PATH,
        load_settings,
    )

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
    import asyncio  # noqa: PLC0415 - not needed for --help

    import structlog  # noqa: PLC0415

    log = structlog.get_logger("rotator.cli")

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
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments)
    args = parser.parse_args(arguments)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"rotator: configuration error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except RotatorError as exc:
        # An expected error is one line that says what to do, never a traceback.
        print(f"rotator: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:  # before the event loop took over SIGINT
        return 128 + signal.SIGINT


def _handlers() -> dict[str, Handler]:
    from rotator import commands  # noqa: PLC0415 - heavy imports only after parsing

    return {
        "rotate": commands.rotate,
        "plan": lambda settings, args, stop: commands.plan(settings, args),
        "status": lambda settings, args, stop: commands.status(settings, args),
        "serve": commands.serve,
        "vault-setup": lambda settings, args, stop: commands.vault_setup(settings, args),
        "doctor": lambda settings, args, stop: _doctor(settings, args),
    }


# Commands that end on SIGTERM as their normal way to stop (exit 0, not 143).
_DAEMONS = frozenset({"serve"})


def _dispatch(args: argparse.Namespace) -> int:
    from rotator.logs import configure_logging  # noqa: PLC0415

    command: str = args.command
    if command == "sim":
        from rotator import sim as sim_module  # noqa: PLC0415

        return sim_module.run(args)
    if command == "demo":
        from rotator import commands  # noqa: PLC0415

        configure_logging(level=args.log_level or "warning", fmt=args.log_format or "auto")
        # With --keep, Ctrl-C is how the demo is meant to end.
        return _run_async(lambda stop: commands.demo(args, stop), signal_exit_codes=not args.keep)
    from rotator.leases import cli as lease_cli  # noqa: PLC0415

    if command in lease_cli.COMMANDS:  # a person's commands: no config, their own Vault token
        return lease_cli.run(args)
    settings = _load(args)
    configure_logging(
        level=args.log_level or settings.logging.level,
        fmt=args.log_format or settings.logging.format,
    )
    handler = _handlers()[command]
    return _run_async(
        lambda stop: handler(settings, args, stop), signal_exit_codes=command not in _DAEMONS
    )


async def _doctor(settings: Settings, args: argparse.Namespace) -> int:
    from rotator.doctor import doctor_command  # noqa: PLC0415 - only doctor needs it

    return await doctor_command(settings, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
