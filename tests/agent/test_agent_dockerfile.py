"""The Dockerfile, read as text (no container engine here): what it promises must hold."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


INSTRUCTIONS = _instructions(DOCKERFILE.read_text())


def _final_stage() -> list[tuple[str, str]]:
    last_from = max(i for i, (word, _) in enumerate(INSTRUCTIONS) if word == "FROM")
    return INSTRUCTIONS[last_from:]


def _promised_entry_points() -> list[str]:
    names: list[str] = []
    for word, args in _final_stage():
        if word == "RUN":
            names += re.findall(r"([a-z][a-z0-9-]+) --help", args)
    return names


def _scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_multi_stage_slim_non_root_read_only_friendly() -> None:
    froms = [args for word, args in INSTRUCTIONS if word == "FROM"]
    assert len(froms) >= 2, "multi-stage build"
    args = dict(a.split("=", 1) for w, a in INSTRUCTIONS if w == "ARG" and "=" in a)
    assert "slim" in args.get("PYTHON_IMAGE", ""), "slim Python base"
    final = _final_stage()
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    env = " ".join(args for word, args in final if word == "ENV")
    for setting in ("HOME=/tmp", "TMPDIR=/tmp", "PYTHONDONTWRITEBYTECODE=1",
                    "OCCURRENCE_DATA_DIR=/tmp"):
        assert setting in env, setting
    assert any(word == "COPY" and "--from=" in args for word, args in final)
    cmd = [args for word, args in final if word == "CMD"]
    assert cmd and "occurrence-agent" in cmd[-1]


def test_image_holds_the_three_entry_points() -> None:
    assert set(_promised_entry_points()) == {
        "occurrence-operator", "occurrence-store", "occurrence-agent"}


@pytest.mark.parametrize("name", ["occurrence-operator", "occurrence-store", "occurrence-agent"])
def test_entry_point_is_declared_and_starts(name: str) -> None:
    assert name in _promised_entry_points()
    scripts = _scripts()
    assert name in scripts, f"pyproject.toml [project.scripts] lacks {name}"
    module, _, func = scripts[name].partition(":")
    code = (f"import sys; sys.argv = [{name!r}, '--help']; from {module} import {func} as f; "
            "sys.exit(f())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower()
