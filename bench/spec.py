"""What the orchestrator tells a contender subprocess, and what the contender answers.

    spec = Spec.load(Path(sys.argv[1]))          # in the contender
    print(result.to_json_line())                 # its last line of stdout

Secrets (the Vault token, the AccessKey secret) are never in the spec: it holds the paths of the
0600 files that contain them, so nothing secret appears on a command line.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MARK_END", "MARK_START", "RESULT_MARKER", "Result", "Spec", "parse_result"]

RESULT_MARKER = "bench_result"
MARK_START = "bench_mark:start"
"""A contender prints this on stderr when its measured work begins ..."""
MARK_END = "bench_mark:end"
"""... and this when it ends: the orchestrator samples CPU and counters at both."""


@dataclass(frozen=True, slots=True)
class Spec:
    """One contender run."""

    name: str
    vault_addr: str
    vault_ca: str
    vault_token_file: str
    sim_base_url: str
    sim_ca: str
    access_key_id: str
    access_key_secret_file: str
    regions: list[str]
    root_path: str = "ehpc/root"
    vnc_path: str = "ehpc/vnc"
    runs_path: str = "ehpc/runs"
    cluster_ids: list[str] = field(default_factory=list)
    """Baselines only: the clusters to rotate (rotator reads its inventory from Vault)."""
    concurrency: int = 64
    rate_limit: str = "100000/1s"
    vault_workers: int = 16
    mode: str = "loop"
    """Baselines: ``loop`` (sequential) or ``gather`` (asyncio.gather under a semaphore)."""

    def dump(self, path: Path) -> Path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(dataclasses.asdict(self), handle)
        return path

    @classmethod
    def load(cls, path: Path) -> Spec:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return cls(**data)


@dataclass(slots=True)
class Result:
    """What one contender measured in its own process."""

    name: str
    clusters: int
    ok: int = 0
    failed: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    lag_max_ms: float = 0.0
    lag_p99_ms: float = 0.0
    started_at: float = 0.0
    """Epoch seconds when the measured phase began (to line up with the simulator's counts)."""
    finished_at: float = 0.0
    vault_ops: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    """Wall seconds per phase (inventory, rotate, ...)."""

    @property
    def done(self) -> int:
        return self.ok + self.failed

    @property
    def per_second(self) -> float:
        return self.done / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_ms_per_rotation(self) -> float:
        return 1000.0 * self.cpu_s / self.done if self.done else 0.0

    def to_json_line(self) -> str:
        return json.dumps({"event": RESULT_MARKER, **dataclasses.asdict(self)})


def parse_result(stdout: str) -> Result | None:
    """The contender's result line, if it printed one."""
    for line in reversed(stdout.splitlines()):
        if RESULT_MARKER not in line:
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.pop("event", None) == RESULT_MARKER:
            return Result(**data)
    return None
