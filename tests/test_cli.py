"""The command line as an operator meets it, through real processes (no servers needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fleet import rotator_bin

# Heavy libraries that only the commands which use them may load (issue 10 §6, issue 14 §2).
HEAVY = ("aiohttp", "hvac", "rich", "prometheus_client", "alibabacloud_credentials", "structlog")


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ROTATOR_")}
    environment.update(env or {})
    return subprocess.run(
        [rotator_bin(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=environment,
        stdin=subprocess.DEVNULL,
    )


def _loaded_after(code: str) -> set[str]:
    """Top-level packages in sys.modules after running ``code`` in a fresh interpreter."""
    listing = "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    probe = f"{code}\nimport sys, json\n{listing}"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_import_rotator_loads_no_heavy_library() -> None:
    loaded = _loaded_after("import rotator")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_public_surface_still_resolves_lazily() -> None:
    loaded = _loaded_after("import rotator\nassert rotator.RunStatus.FAILURE.exit_code == 4")
    assert "rich" not in loaded  # the report module renders with rich only when asked


def test_help_loads_no_heavy_library() -> None:
    code = (
        "import rotator.cli\n"
        "try:\n"
        "    rotator.cli.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "try:\n"
        "    rotator.cli.main(['rotate', '--help'])\n"
        "except SystemExit:\n"
        "    pass"
    )
    loaded = _loaded_after(code)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("rotator ")


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "{config}", "status"],
        ["status", "--config", "{config}"],
        ["--log-level", "error", "--config", "{config}", "plan", "--all"],
    ],
)
def test_global_options_before_or_after_the_subcommand(tmp_path: Path, argv: list[str]) -> None:
    missing = tmp_path / "nowhere.toml"
    result = _run(*(a.format(config=missing) for a in argv))
    # The config named is the one read, wherever --config stands.
    assert result.returncode == 2, result.stderr
    assert f"config file {missing} does not exist" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("level", ["verbose", "WARN", "trace"])
def test_an_invalid_log_level_is_refused(level: str) -> None:
    result = _run("status", "--log-level", level)
    assert result.returncode == 2
    assert "--log-level" in result.stderr
    assert "Traceback" not in result.stderr


def test_report_never_creates_folders(tmp_path: Path) -> None:
    config = tmp_path / "rotator.toml"
    config.write_text("[logging]\nformat = 'json'\n", encoding="utf-8")
    report = tmp_path / "no" / "such" / "folder" / "report.json"
    result = _run("rotate", "--all", "--config", str(config), "--report", str(report))
    assert result.returncode == 2, result.stderr
    assert "does not exist" in result.stderr
    assert not (tmp_path / "no").exists()
    assert len(result.stderr.strip().splitlines()) == 1
