"""Sampling the rotator contender with py-spy (all threads), and reading the samples.

    wrapper = py_spy_wrapper(Path("prof/rotator.txt"))   # None when py-spy is not installed
    run_contender("bench.contender_rotator", spec, workdir, wrapper=wrapper)
    print(summarise(Path("prof/rotator.txt")))

py-spy (``pip install py-spy``) samples the process from outside, so it sees the Vault thread pool
as well as the event loop, which cProfile (one thread) cannot. It keeps only samples of the thread
holding the GIL (``--gil``): rotator is GIL-bound, and without it threads blocked in socket reads
count as busy.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from pathlib import Path

__all__ = ["CATEGORIES", "py_spy_wrapper", "summarise"]

# First match wins, tested against the whole stack from the leaf up.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("TLS (ssl)", ("ssl.py", "sslproto.py")),
    ("structlog + redaction", ("structlog", "rotator/logs.py", "rotator/secret.py")),
    ("hvac / requests / urllib3 (Vault client)", ("hvac/", "requests/", "urllib3/")),
    ("json", ("json/",)),
    ("aiohttp (API client)", ("aiohttp/", "yarl/", "multidict/")),
    ("signing (ACS3)", ("rotator/ehpc/signer.py",)),
    ("thread pool hand-off", ("concurrent/futures", "threading.py", "queue.py")),
    ("asyncio machinery", ("asyncio/",)),
    ("rotator engine and store", ("rotator/",)),
)
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def py_spy_wrapper(output: Path, *, rate: int = 250) -> list[str] | None:
    """The ``py-spy record`` prefix for a command, or None without py-spy."""
    binary = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if binary is None:
        return None
    return [
        binary,
        "record",
        "--nonblocking",
        f"--rate={rate}",
        "--format=raw",
        "--threads",
        "--gil",
        f"--output={output}",
        "--",
    ]


def _frames(stack: str) -> list[tuple[str, str]]:
    frames = []
    for raw in stack.split(";"):
        match = _FRAME.match(raw)
        if match:
            frames.append((match.group("func"), match.group("file")))
    return frames


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return path


def summarise(path: Path, *, top: int = 25) -> str:
    """Where the samples went: by thread kind, by category, by function (self and inclusive)."""
    by_thread: Counter[str] = Counter()
    by_category: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _LINE.match(line.strip())
        if not match:
            continue
        count = int(match.group("count"))
        stack = match.group("stack")
        frames = _frames(stack)
        if not frames:
            continue
        total += count
        files = [f for _, f in frames]
        thread = (
            "Vault worker threads"
            if any("concurrent/futures" in f for f in files)
            else ("event loop" if any("asyncio/" in f for f in files) else "other")
        )
        by_thread[thread] += count
        category = next(
            (
                name
                for file in reversed(files)
                for name, needles in CATEGORIES
                if any(n in file for n in needles)
            ),
            "other",
        )
        by_category[category] += count
        func, file = frames[-1]
        own[f"{func} ({_short(file)})"] += count
        for name in {f"{fn} ({_short(fl)})" for fn, fl in frames}:
            inclusive[name] += count
    if not total:
        return f"no samples in {path}"

    def pct(n: int) -> str:
        return f"{100.0 * n / total:5.1f}%"

    out = [f"py-spy samples: {total} (CPU only, all threads)", "", "by thread:"]
    out += [f"  {pct(n)}  {name}" for name, n in by_thread.most_common()]
    out += ["", "by category (innermost library on the stack):"]
    out += [f"  {pct(n)}  {name}" for name, n in by_category.most_common()]
    out += ["", f"top {top} functions by own time:"]
    out += [f"  {pct(n)}  {name}" for name, n in own.most_common(top)]
    out += ["", f"top {top} functions by inclusive time:"]
    out += [f"  {pct(n)}  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(out)


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1])))
