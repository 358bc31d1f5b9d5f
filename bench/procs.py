"""The simulator as a subprocess, and contenders as subprocesses, cleaned up whatever happens.

    with start_sim(workdir, clusters=2000, latency_ms=20, ...) as sim:
        sim.clusters(); sim.reset_stats(); sim.stats()
        result = run_contender("bench.contender_rotator", spec, workdir)

Everything listens on and talks to 127.0.0.1 only; the children get an environment without
proxy, Vault or Alibaba Cloud variables, so nothing from the caller's shell redirects them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs in the dev extras

from bench.spec import Result, Spec, parse_result

__all__ = ["ROOT", "SimProcess", "child_env", "cpu_seconds", "run_contender", "start_sim"]

ROOT = Path(__file__).resolve().parent.parent
_READY_TIMEOUT = 60.0
_STOP_TIMEOUT = 10.0
_DROPPED_PREFIXES = ("VAULT_", "BAO_", "ALIBABA_CLOUD_", "ROTATOR_")
# A crashed baseline's traceback may quote the SDK's URL, which carries passwords in its query.
_MASK_PASSWORDS = re.compile(r"(?i)(passw(?:or)?d\w*['\"]?\s*[=:]\s*['\"]?)[^&\s,'\"]+")
_PROXIES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def child_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_DROPPED_PREFIXES) and k.lower() not in _PROXIES
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 once it is gone)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass(slots=True)
class SimProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    admin_token: str
    ca_file: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def _admin(self, method: str, path: str) -> Any:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        request = urllib.request.Request(  # noqa: S310 - the simulator's loopback https URL
            f"{self.base_url}/_sim/{path}",
            method=method,
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        with opener.open(request, timeout=60) as response:
            return json.loads(response.read())

    def clusters(self) -> list[dict[str, Any]]:
        clusters: list[dict[str, Any]] = self._admin("GET", "clusters")
        return clusters

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self._admin("GET", "stats")
        return stats

    def reset_stats(self) -> None:
        self._admin("POST", "stats/reset")


def _wait_ready(process: subprocess.Popen[bytes], log_path: Path) -> dict[str, Any]:
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if '"sim_ready"' in line:
                ready: dict[str, Any] = json.loads(line)
                return ready
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"the simulator did not start; see {log_path}")


@contextlib.contextmanager
def start_sim(
    workdir: Path,
    *,
    clusters: int,
    regions: list[str],
    latency_ms: float,
    jitter_ms: float,
    access_key_id: str,
    secret_file: Path,
    admin_token_file: Path,
    seed: int = 11,
) -> Iterator[SimProcess]:
    """``python -m rotator.sim --tls`` in its own session, stopped on exit (even on Ctrl-C)."""
    state_dir = workdir / f"sim-{clusters}"
    state_dir.mkdir(mode=0o700)
    log_path = workdir / f"sim-{clusters}.log"
    argv = [
        sys.executable,
        "-m",
        "rotator.sim",
        "--tls",
        "--host=127.0.0.1",
        "--port=0",
        f"--clusters={clusters}",
        f"--regions={','.join(regions)}",
        f"--seed={seed}",
        f"--latency-ms={latency_ms}",
        f"--jitter-ms={jitter_ms}",
        f"--access-key-id={access_key_id}",
        f"--access-key-secret-file={secret_file}",
        f"--admin-token-file={admin_token_file}",
        f"--state-dir={state_dir}",
        "--log-level=warning",
        "--log-format=json",
    ]
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as log_file:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=ROOT,
            start_new_session=True,  # Ctrl-C is ours to handle: we stop it in order
        )
    try:
        ready = _wait_ready(process, log_path)
        yield SimProcess(
            process=process,
            base_url=str(ready["base_url"]),
            admin_token=admin_token_file.read_text(encoding="utf-8").strip(),
            ca_file=Path(str(ready["ca_file"])),
            log_path=log_path,
        )
    finally:
        _stop(process)


def run_contender(
    module: str,
    spec: Spec,
    workdir: Path,
    *,
    timeout: float = 600.0,
    wrapper: list[str] | None = None,
) -> tuple[Result, float]:
    """Run ``python -m <module> <spec file>``; its result and its wall time from outside.

    ``wrapper`` goes in front of the command line (a profiler: ``py-spy record ... --``).
    """
    spec_path = spec.dump(workdir / f"spec-{spec.name}.json")
    log_path = workdir / f"{spec.name}.log"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    started = time.perf_counter()
    with os.fdopen(fd, "wb") as log_file:
        process = subprocess.Popen(
            [*(wrapper or []), sys.executable, "-m", module, str(spec_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            env=child_env(),
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            stdout, _ = process.communicate(timeout=timeout)
        finally:
            _stop(process)
    elapsed = time.perf_counter() - started
    result = parse_result(stdout.decode("utf-8", errors="replace"))
    if process.returncode != 0 or result is None:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        raise RuntimeError(
            f"{module} ({spec.name}) failed with exit code {process.returncode}:\n"
            + "\n".join(_MASK_PASSWORDS.sub(r"\1******", line) for line in tail)
        )
    return result, elapsed
