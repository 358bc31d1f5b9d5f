"""`make demo` is the README's first command: it must work as a person runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_the_demo_rotates_verifies_and_prints_readable_lines_off_a_terminal() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIBABA_CLOUD_", "ROTATOR_"))}
    result = subprocess.run(
        [sys.executable, "-m", "rotator.cli", "demo", "--clusters", "12"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "OK: Vault holds every password the simulator has" in result.stdout
    assert "lost: 0" in result.stdout
    # Off a terminal nothing is wrapped, and nothing is drawn at an unbounded width either.
    longest = max(len(line) for line in result.stdout.splitlines())
    assert longest < 400, f"a {longest}-character line"
