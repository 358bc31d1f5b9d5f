"""``rotator sim`` / ``python -m rotator.sim``: run the simulator until SIGINT or SIGTERM.

    rotator sim --port 8080 --clusters 200 --tls --service-unavailable-rate 0.05 \\
        --quota ModifyVisualServicePasswd=100/60s --access-key-secret-file key.txt

On start it prints a line for people and one JSON line for programs (flushed)::

    {"event": "sim_ready", "base_url": ..., "admin_token": ..., "ca_file": ...,
     "access_key_id": ..., "endpoints": {region: url}}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from rotator.errors import ConfigError
from rotator.logs import configure_logging
from rotator.secret import read_secret_file
from rotator.sim.config import ACTIONS, DEFAULT_REGIONS, FaultConfig, SimConfig
from rotator.sim.quotas import parse_quotas
from rotator.sim.rules import PASSWD_RULES
from rotator.sim.server import Simulator

__all__ = ["SECRET_ENV", "add_arguments", "config_from_args", "run"]

SECRET_ENV = "ROTATOR_SIM_ACCESS_KEY_SECRET"  # noqa: S105 - a variable name
_DEFAULT_SECRET = "sim-access-key-secret"  # noqa: S105 - the simulator's documented default


def _qps(value: str) -> tuple[str, int]:
    action, sep, number = value.partition("=")
    if not sep or action not in ACTIONS:
        raise argparse.ArgumentTypeError(f"expected ACTION=N with ACTION one of {ACTIONS}")
    try:
        limit = int(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{number!r} is not an integer") from None
    if limit < 1:
        raise argparse.ArgumentTypeError("the limit must be >= 1")
    return action, limit


def _quota(value: str) -> tuple[str, str]:
    rule, sep, rate = value.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(
            "expected RULE=N/PERIOD, e.g. ModifyVisualServicePasswd=100/60s"
        )
    try:
        parse_quotas({rule: rate}, actions=ACTIONS)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return rule, rate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's flags to ``parser`` (``rotator sim`` and ``python -m rotator.sim``)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    parser.add_argument("--clusters", type=int, default=20, help="number of clusters")
    parser.add_argument(
        "--regions",
        default=",".join(DEFAULT_REGIONS),
        help="comma-separated regions the clusters are spread over",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for inventory and faults")
    parser.add_argument("--access-key-id", default="sim-access-key-id")
    parser.add_argument(
        "--access-key-secret-file",
        type=Path,
        help=f"file holding the accepted AccessKey secret (else ${SECRET_ENV}, else a default)",
    )
    parser.add_argument(
        "--admin-token-file", type=Path, help="file holding the admin token (default: random)"
    )
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a generated CA")
    parser.add_argument("--state-dir", type=Path, help="where to write sim-ca.pem")
    parser.add_argument(
        "--passwd-rule",
        choices=sorted(PASSWD_RULES),
        default="current",
        help="the Passwd rule to enforce: current (6 letters and digits) or legacy (8-30, 3 of 4 "
        "classes)",
    )
    parser.add_argument(
        "--region-endpoints",
        action="store_true",
        help="also serve one port per region, where the endpoint sets the region",
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")
    parser.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    faults = parser.add_argument_group("fault injection (changeable at runtime: PUT /_sim/faults)")
    for flag in (
        "service-unavailable-rate",
        "agent-error-rate",
        "unknown-error-rate",
        "conflict-rate",
        "hang-rate",
        "drop-rate",
        "silent-noop-rate",
    ):
        faults.add_argument(f"--{flag}", type=float, default=0.0, help="probability per call")
    faults.add_argument(
        "--conflict-seconds", type=float, default=2.0, help="length of a ConflictOpt window"
    )
    faults.add_argument(
        "--qps-limit",
        type=_qps,
        action="append",
        default=[],
        metavar="ACTION=N",
        help="calls per second for ACTION over all regions (older form of --quota; repeatable)",
    )
    faults.add_argument(
        "--quota",
        type=_quota,
        action="append",
        default=[],
        metavar="RULE=N/PERIOD",
        help="flow control, above it Throttling.User: RULE is ACTION (per region endpoint), "
        "ACTION@account, ACTION@<region>, or * for every action; e.g. "
        "ModifyVisualServicePasswd=100/60s (repeatable)",
    )
    faults.add_argument("--latency-ms", type=float, default=0.0, help="added to every call")
    faults.add_argument("--jitter-ms", type=float, default=0.0, help="uniform extra latency")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The :class:`SimConfig` the parsed flags describe; ConfigError on bad values."""
    if args.access_key_secret_file is not None:
        secret = read_secret_file(
            args.access_key_secret_file, key="--access-key-secret-file"
        ).reveal()
    else:
        secret = os.environ.get(SECRET_ENV) or _DEFAULT_SECRET
    admin_token = None
    if args.admin_token_file is not None:
        admin_token = read_secret_file(args.admin_token_file, key="--admin-token-file").reveal()
    try:
        faults = FaultConfig(
            service_unavailable_rate=args.service_unavailable_rate,
            agent_error_rate=args.agent_error_rate,
            unknown_error_rate=args.unknown_error_rate,
            conflict_rate=args.conflict_rate,
            conflict_seconds=args.conflict_seconds,
            qps_limit=dict(args.qps_limit),
            quotas=dict(args.quota),
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            hang_rate=args.hang_rate,
            drop_rate=args.drop_rate,
            silent_noop_rate=args.silent_noop_rate,
        )
        return SimConfig(
            host=args.host,
            port=args.port,
            clusters=args.clusters,
            regions=tuple(r.strip() for r in args.regions.split(",") if r.strip()),
            seed=args.seed,
            access_key_id=args.access_key_id,
            access_key_secret=secret,
            admin_token=admin_token,
            tls=args.tls,
            state_dir=args.state_dir,
            faults=faults,
            passwd_rule=args.passwd_rule,
            region_endpoints=args.region_endpoints,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


async def _serve(config: SimConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Simulator(config) as sim:
            print(
                f"E-HPC simulator serving {len(sim.inventory.clusters)} clusters over "
                f"{', '.join(config.regions)} at {sim.base_url}"
                + (f" (trust the CA in {sim.ca_file})" if sim.ca_file else ""),
                flush=True,
            )
            ready = {
                "event": "sim_ready",
                "base_url": sim.base_url,
                "vnc_url": sim.vnc_url,
                "admin_token": sim.admin_token,
                "ca_file": str(sim.ca_file) if sim.ca_file else None,
                "access_key_id": config.access_key_id,
                "endpoints": sim.endpoints,
            }
            print(json.dumps(ready), flush=True)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 0 on a clean stop, 2 on a configuration error."""
    configure_logging(level=args.log_level, fmt=args.log_format)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"rotator sim: {exc.message}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config))
    except OSError as exc:
        print(f"rotator sim: cannot serve on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 2
    return 0
