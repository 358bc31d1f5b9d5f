"""The bench harness end to end on a tiny fleet: real OpenBao, the simulator, every contender."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.run import main


def test_a_tiny_bench_runs_every_unthrottled_contender(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    argv = ["--clusters", "20", "--json", str(out)]
    argv += [
        arg
        for part in ("transport", "tty", "ratelimit", "quota", "rss")
        for arg in ("--skip", part)
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "died" not in text
    data = json.loads(out.read_text(encoding="utf-8"))
    for key in ("rotator", "sdk_system_ca", "sdk_one_cert"):
        contender = data["contenders"][key]
        assert contender["error"] is None
        assert contender["done"] == 20
        assert contender["rotated"] >= 15  # the simulator keeps a few clusters not running
        assert contender["work"]["vault_requests"] > 0


def test_a_tiny_bench_compares_the_vault_transports_and_rounds_the_binding_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # One bench for both (an OpenBao and a simulator less to start).
    out = tmp_path / "bench.json"
    argv = ["--clusters", "10", "--rounds", "2", "--rate-seconds", "1", "--json", str(out)]
    skip = ("baselines", "tty", "quota", "rss")
    argv += [arg for part in skip for arg in ("--skip", part)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "died" not in text
    assert "hvac / aiohttp (same run)" in text
    data = json.loads(out.read_text(encoding="utf-8"))
    for key in ("rotator", "rotator_hvac"):
        contender = data["contenders"][key]
        assert contender["error"] is None
        assert contender["done"] == 10
        assert contender["whole"]["vault_requests"] > 0
    assert "at the binding limit vs unthrottled: median" in text
    assert "(median of 2 rounds)" in text
    (second,) = data["more_rounds"]
    assert second["order"] == ["binding", "plain"]
    assert second["tty"] is None
    # Round 1's limit and clusters again, each run from a fresh state (its own Vault paths).
    assert second["limited"]["error"] is None
    assert second["limited"]["done"] == data["limited"]["done"]
    assert second["plain"]["done"] == 10
    assert len(data["round_ratios"]["binding_over_free_cpu"]["per_round"]) == 2
