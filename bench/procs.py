"""The simulator as a subprocess, and contenders as subprocesses, cleaned up whatever happens.

    with start_sim(workdir, clusters=2000, latency_ms=20, ...) as sim:
        sim.clusters(); sim.reset_stats(); sim.stats()
        probe = Probe(sim_pid=sim.pid, vault_pid=bao_pid, vault_requests=counter)
        run = run_child(argv, name="rotator", workdir=workdir, probe=probe,
                        markers=["run_started", "run_finished"])
        run.span("run_started", "run_finished")      # wall, CPU and Vault requests in between

A contender is measured from outside, the same way for all: the orchestrator watches its output
for marker strings and samples, at each, the contender's CPU (psutil), the simulator's and
OpenBao's CPU and OpenBao's request counter; at exit it takes the CPU time and peak RSS the
kernel reports (``wait4``). A contender that fails or dies is a :class:`ChildRun` with an
``error``, never an exception.

Everything listens on and talks to 127.0.0.1 only; the children get an environment without
proxy, Vault or Alibaba Cloud variables, so nothing from the caller's shell redirects them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import pty
import re
import signal
import ssl
import struct
import subprocess
import sys
import termios
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import psutil  # type: ignore[import-untyped]  # no stubs in the dev extras

__all__ = [
    "ROOT",
    "ChildRun",
    "Probe",
    "Sample",
    "SimProcess",
    "Span",
    "child_env",
    "cpu_seconds",
    "run_child",
    "start_sim",
    "stop_children",
]

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
    extra_args: Sequence[str] = (),
    label: str = "",
) -> Iterator[SimProcess]:
    """``python -m rotator.sim --tls`` in its own session, stopped on exit (even on Ctrl-C)."""
    name = f"sim-{label or clusters}"
    state_dir = workdir / name
    state_dir.mkdir(mode=0o700)
    log_path = workdir / f"{name}.log"
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
        *extra_args,
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


# Contenders running now (process group ids), so an interrupted bench can stop them all.
_LIVE: set[int] = set()
_LIVE_LOCK = threading.Lock()


def stop_children() -> None:
    """SIGKILL every contender this process started that is still running (by its group)."""
    with _LIVE_LOCK:
        groups = list(_LIVE)
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


class RequestCounter(Protocol):
    def __call__(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Sample:
    """Counters at one instant."""

    t: float
    client_cpu_s: float
    sim_cpu_s: float
    vault_cpu_s: float
    vault_requests: int | None
    """OpenBao's count of handled requests so far; None if it could not be read."""


@dataclass(frozen=True, slots=True)
class Span:
    """What happened between two samples."""

    wall_s: float
    client_cpu_s: float
    sim_cpu_s: float
    vault_cpu_s: float
    vault_requests: int | None

    @classmethod
    def between(cls, a: Sample, b: Sample) -> Span:
        requests = (
            b.vault_requests - a.vault_requests
            if a.vault_requests is not None and b.vault_requests is not None
            else None
        )
        return cls(
            wall_s=b.t - a.t,
            client_cpu_s=max(0.0, b.client_cpu_s - a.client_cpu_s),
            sim_cpu_s=b.sim_cpu_s - a.sim_cpu_s,
            vault_cpu_s=b.vault_cpu_s - a.vault_cpu_s,
            vault_requests=requests,
        )


@dataclass(frozen=True, slots=True)
class Probe:
    """Samples the counters around one contender."""

    sim_pid: int
    vault_pid: int
    vault_requests: RequestCounter

    def sample(self, client_cpu_s: float) -> Sample:
        return Sample(
            t=time.perf_counter(),
            client_cpu_s=client_cpu_s,
            sim_cpu_s=cpu_seconds(self.sim_pid),
            vault_cpu_s=cpu_seconds(self.vault_pid),
            vault_requests=self.vault_requests(),
        )


@dataclass(slots=True)
class ChildRun:
    """One contender process, measured from outside."""

    name: str
    log_path: Path
    launched: Sample
    exited: Sample | None = None
    marks: dict[str, Sample] = field(default_factory=dict)
    exit_code: int | None = None
    peak_rss_mb: float = 0.0
    stdout: str = ""
    error: str | None = None
    """Why the contender produced no usable result (crash, timeout, missing marker)."""

    def span(self, start: str, end: str) -> Span | None:
        """Between two markers (``launch`` and ``exit`` are the process's own ends)."""
        a = self.launched if start == "launch" else self.marks.get(start)
        b = self.exited if end == "exit" else self.marks.get(end)
        if a is None or b is None:
            return None
        return Span.between(a, b)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        tail = text.splitlines()[-lines:]
        return "\n".join(_MASK_PASSWORDS.sub(r"\1******", line) for line in tail)


class _Watcher:
    """Copies a child's output to its log and calls ``on_mark`` the first time a marker shows."""

    def __init__(
        self, markers: Sequence[str], on_mark: Callable[[str], None], log: IO[bytes]
    ) -> None:
        self._pending = [m.encode() for m in markers]
        self._on_mark = on_mark
        self._log = log
        self._carry = b""
        self._lock = threading.Lock()

    def feed(self, chunk: bytes) -> None:
        with self._lock:
            self._log.write(chunk)
            data = self._carry + chunk
            for marker in list(self._pending):
                if marker in data:
                    self._pending.remove(marker)
                    self._on_mark(marker.decode())
            # A marker split across two reads is still found.
            self._carry = data[-64:]


def _pump(fd: int, feed: Callable[[bytes], None]) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # a pty's master answers EIO once the child side is closed
            return
        if not chunk:
            return
        feed(chunk)


def _child_cpu(pid: int) -> float:
    """The child's CPU so far; -1 once it is gone (filled in from its exit figures)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return -1.0
    return float(times.user + times.system)


def _reap(process: subprocess.Popen[bytes], deadline: float) -> tuple[int, Any, bool]:
    """Wait for the child with ``wait4`` (for its rusage); kill its group at the deadline."""
    timed_out = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            _, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(0.02)
    code = os.waitstatus_to_exitcode(status)
    process.returncode = code  # reaped here: Popen must not wait for it again
    return code, usage, timed_out


def _spawn(
    argv: Sequence[str], env: dict[str, str], *, use_pty: bool
) -> tuple[subprocess.Popen[bytes], int]:
    """The child, and the master side of its terminal (-1 when it has pipes instead)."""
    if not use_pty:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        return process, -1
    master, slave = pty.openpty()
    try:
        # A fixed 120x40 terminal, so the progress bar is laid out the same every run.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        process = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**env, "TERM": "xterm-256color"},
            cwd=ROOT,
            start_new_session=True,
        )
    except OSError:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return process, master


def run_child(
    argv: Sequence[str],
    *,
    name: str,
    workdir: Path,
    probe: Probe,
    markers: Sequence[str],
    use_pty: bool = False,
    extra_env: dict[str, str] | None = None,
    timeout: float = 600.0,
) -> ChildRun:
    """Run one contender to its end; every failure is in the returned ``error``."""
    log_path = workdir / f"{name}.log"
    env = {**child_env(), **(extra_env or {})}
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as log:
        run = ChildRun(name=name, log_path=log_path, launched=probe.sample(0.0))
        pid_box: list[int] = []

        def on_mark(marker: str) -> None:
            run.marks[marker] = probe.sample(_child_cpu(pid_box[0]) if pid_box else 0.0)

        watcher = _Watcher(markers, on_mark, log)
        stdout_parts: list[bytes] = []
        try:
            process, master = _spawn(argv, env, use_pty=use_pty)
        except OSError as exc:
            run.error = f"could not start: {exc.strerror or exc}"
            return run
        if master >= 0:
            readers = [threading.Thread(target=_pump, args=(master, watcher.feed))]
        else:
            sinks = ((process.stdout, stdout_parts.append), (process.stderr, watcher.feed))
            readers = [
                threading.Thread(target=_pump, args=(pipe.fileno(), sink))
                for pipe, sink in sinks
                if pipe is not None
            ]
        pid_box.append(process.pid)
        with _LIVE_LOCK:
            _LIVE.add(process.pid)
        for reader in readers:
            reader.daemon = True
            reader.start()
        try:
            code, usage, timed_out = _reap(process, time.monotonic() + timeout)
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(process.pid)
            if process.returncode is None:  # interrupted: stop it before anything else
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            for reader in readers:
                reader.join(timeout=10)
            if master >= 0:
                os.close(master)
            for pipe in (process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()
        total_cpu = float(usage.ru_utime + usage.ru_stime)
        run.exited = probe.sample(total_cpu)
        # A marker read just as the child exited: its CPU by then is all of it.
        run.marks = {
            name: dataclasses.replace(mark, client_cpu_s=total_cpu)
            if mark.client_cpu_s < 0
            else mark
            for name, mark in run.marks.items()
        }
        run.exit_code = code
        run.peak_rss_mb = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
        run.stdout = b"".join(stdout_parts).decode("utf-8", errors="replace")
    if timed_out:
        run.error = f"killed after {timeout:.0f} s without finishing"
    else:
        missing = [m for m in markers if m not in run.marks]
        if missing:
            run.error = (
                f"exited with code {code} before printing {', '.join(missing)}"
                if code
                else f"never printed {', '.join(missing)}"
            )
    return run
