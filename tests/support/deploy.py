"""Readers for the files under ``deploy/``, shared by tests/test_deploy.py.

    context = docker_build_context(REPO)            # files `docker build .` would send
    stages = dockerfile_stages(REPO / "deploy/docker/Dockerfile")
    unit = read_unit(REPO / "deploy/systemd/rotator-rotate.service")
    unit["Service"]["Type"]                         # ["oneshot"]

Plain helpers, no fixtures: each parser implements just enough of its format for the files we
ship, and fails loudly on anything it does not understand.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "REPO",
    "Instruction",
    "Stage",
    "copy_sources",
    "docker_build_context",
    "dockerfile_stages",
    "dockerignore_excludes",
    "read_unit",
    "rotator_invocations",
]

REPO = Path(__file__).resolve().parents[2]


# --- .dockerignore -------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (Go filepath.Match plus ``**``) as an anchored regex."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _rules(dockerignore: Path) -> list[tuple[bool, re.Pattern[str]]]:
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in dockerignore.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def dockerignore_excludes(dockerignore: Path, relpath: str) -> bool:
    """Whether Docker leaves ``relpath`` (posix, relative to the context) out of the context.

    As in Docker: the last matching rule wins, and a rule matching a parent directory
    matches everything below it.
    """
    parts = relpath.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negate, regex in _rules(dockerignore):
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded


def docker_build_context(root: Path) -> set[str]:
    """Every file (posix path relative to ``root``) that ``docker build root`` would send."""
    ignore = root / ".dockerignore"
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        # Prune heavy trees (.venv, .git) only when no rule could bring a file back from them.
        dirnames[:] = [d for d in dirnames if not _prunable(ignore, prefix + d)]
        found.update(
            prefix + name for name in filenames if not dockerignore_excludes(ignore, prefix + name)
        )
    return found


def _prunable(ignore: Path, reldir: str) -> bool:
    if not dockerignore_excludes(ignore, reldir):
        return False
    negations = [
        line.strip()[1:].lstrip("/")
        for line in ignore.read_text(encoding="utf-8").splitlines()
        if line.strip().startswith("!")
    ]
    return not any(n.startswith(reldir + "/") or n.startswith("**") for n in negations)


# --- Dockerfile ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    """Upper-cased instruction, e.g. ``COPY``."""
    args: str
    """Everything after the keyword, continuation lines joined."""


@dataclass(slots=True)
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def _logical_lines(text: str) -> Iterator[str]:
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        yield pending + stripped
        pending = ""
    if pending:
        raise ValueError("Dockerfile ends inside a continued line")


def dockerfile_stages(path: Path) -> list[Stage]:
    """The build stages in order; ARG defaults are substituted into FROM lines."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(base=base, name=name))
        elif keyword == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key] = default
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, rest))
        else:
            raise ValueError(f"{keyword} before the first FROM in {path}")
    return stages


def copy_sources(instruction: Instruction) -> list[str]:
    """Source paths of a COPY/ADD (exec or shell form), without flags and destination."""
    if instruction.args.startswith("["):
        words: list[str] = json.loads(instruction.args)
    else:
        words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
    return words[:-1]


# --- systemd units -------------------------------------------------------------------------


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values in order]}}``; repeated keys (Environment=) keep every value."""
    unit: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if section is None or not sep or line.endswith("\\"):
            raise ValueError(f"{path.name}:{number}: cannot parse {line!r}")
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


# --- command lines -------------------------------------------------------------------------


def rotator_invocations(argv: list[str]) -> tuple[str, list[str]]:
    """``["rotate", "--all", "--config", "x"]`` -> ``("rotate", ["--all", "--config"])``."""
    subcommand, *rest = argv
    return subcommand, [word for word in rest if word.startswith("--")]
