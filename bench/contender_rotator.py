"""Contender: rotator itself, through its public CLI and a config file, as a user runs it.

    config = RotatorConfig(...).write(workdir / "rotator.toml")
    argv = rotate_argv(config, report=workdir / "report.json")
    outcome = read_report(workdir / "report.json")

``rotator rotate --all`` reads its inventory from Vault, logs ``run_started`` when the inventory
is resolved and ``run_finished`` when the batch is done: the bench measures the rotation between
the two, and start-up plus inventory apart. Nothing here imports rotator, so rotator's internals
can change under the bench.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RUN_FINISHED", "RUN_STARTED", "Outcome", "RotatorConfig", "read_report", "rotate_argv"]

RUN_STARTED = "run_started"
RUN_FINISHED = "run_finished"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


@dataclass(frozen=True, slots=True)
class RotatorConfig:
    """The keys of config/rotator.example.toml the bench sets; secrets are file paths only."""

    vault_addr: str
    vault_ca: str
    vault_token_file: str
    sim_base_url: str
    sim_ca: str
    access_key_id: str
    access_key_secret_file: str
    regions: tuple[str, ...]
    root_path: str
    vnc_path: str
    runs_path: str
    rate_limit: str = "100000/1s"
    concurrency: int = 64
    vault_workers: int = 16
    vault_transport: str | None = None
    """``vault.transport`` ("hvac" or "aiohttp"); None leaves rotator's default in force."""

    def sections(self) -> dict[str, dict[str, Any]]:
        vault: dict[str, Any] = {
            "addr": self.vault_addr,
            "ca_cert": self.vault_ca,
            "auth_method": "token",
            "token_file": self.vault_token_file,
            "root_path": self.root_path,
            "vnc_path": self.vnc_path,
            "runs_path": self.runs_path,
            "max_workers": self.vault_workers,
        }
        if self.vault_transport is not None:
            vault["transport"] = self.vault_transport
        return {
            "ehpc": {
                "regions": list(self.regions),
                "endpoint": self.sim_base_url,
                "ca_bundle": self.sim_ca,
                "rate_limit": self.rate_limit,
                "request_timeout": "15s",
                "max_connections": max(100, self.concurrency),
            },
            "credentials": {
                "source": "static",
                "access_key_id": self.access_key_id,
                "access_key_secret_file": self.access_key_secret_file,
            },
            "vault": vault,
            "rotation": {"concurrency": self.concurrency},
            "inventory": {"source": "vault"},
            # The defaults, written out: per-cluster lines at info, JSON unless on a terminal.
            "logging": {"level": "info", "format": "auto"},
        }

    def write(self, path: Path) -> Path:
        lines: list[str] = []
        for section, values in self.sections().items():
            lines.append(f"[{section}]")
            lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
            lines.append("")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines))
        return path


def rotate_argv(config: Path, *, report: Path) -> list[str]:
    """``rotator rotate --all``: the installed console script, else its entry point."""
    script = Path(sys.executable).parent / "rotator"
    head = (
        [str(script)]
        if script.is_file()
        else [sys.executable, "-c", "import sys; from rotator.cli import main; sys.exit(main())"]
    )
    return [*head, "rotate", "--config", str(config), "--all", "--report", str(report)]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one run did, from its JSON summary."""

    total: int
    rotated: int
    codes: dict[str, int]
    """Every cluster not rotated, by outcome and code (``skipped:InvalidClusterStatus``)."""

    @property
    def other(self) -> int:
        return self.total - self.rotated


def read_report(path: Path) -> Outcome | None:
    """The summary ``--report`` wrote; None if there is none (the run died)."""
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    codes: Counter[str] = Counter()
    for cluster in data.get("clusters", []):
        if cluster.get("outcome") != "rotated":
            codes[f"{cluster.get('outcome')}:{cluster.get('code')}"] += 1
    counts = data.get("counts", {})
    return Outcome(
        total=int(data.get("total", sum(counts.values()))),
        rotated=int(counts.get("rotated", 0)),
        codes=dict(codes),
    )
