"""The dependency lock files: what `make test`, the image and CI install, exactly and hashed."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[3]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def pins(lock: str) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of every requirement in a lock file."""
    found: dict[str, tuple[str, int]] = {}
    name = None
    for line in (REPO / lock).read_text().splitlines():
        match = _PIN.match(line)
        if match:
            name = canonicalize_name(match.group(1))
            found[name] = (match.group(2), 0)
        elif name and line.strip().startswith("--hash=sha256:"):
            version, hashes = found[name]
            found[name] = (version, hashes + 1)
    return found


def wanted(extra: str | None) -> list[Requirement]:
    reqs = list(PYPROJECT["project"]["dependencies"])
    reqs += PYPROJECT["build-system"]["requires"]
    if extra:
        reqs += PYPROJECT["project"]["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


@pytest.mark.parametrize(("lock", "extra"), [("requirements.lock", None),
                                             ("requirements-test.lock", "test")])
def test_lock_pins_every_declared_dependency_within_its_range(lock: str, extra: str | None) -> None:
    locked = pins(lock)
    for req in wanted(extra):
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is not in {lock}: run make lock"
        version, hashes = locked[name]
        assert req.specifier.contains(version, prereleases=True), (
            f"{lock} pins {req.name}=={version}, outside {req.specifier}: run make lock")
        assert hashes >= 1, f"{req.name} has no hash in {lock}"
    assert all(h >= 1 for _, h in locked.values()), "every pin carries its hashes"


def test_runtime_lock_is_the_test_lock_minus_test_tools() -> None:
    runtime, test = pins("requirements.lock"), pins("requirements-test.lock")
    differ = {n: (v, test.get(n)) for n, v in runtime.items() if test.get(n, (None,))[0] != v[0]}
    assert not differ, f"the image and the test venv would run different versions: {differ}"


def test_image_and_venv_install_from_the_locks_with_hashes() -> None:
    dockerfile = " ".join((REPO / "Dockerfile").read_text().replace("\\\n", " ").split())
    assert re.search(r"pip install [^&]*--require-hashes -r /src/requirements.lock", dockerfile)
    assert "--no-deps --no-build-isolation" in dockerfile
    makefile = (REPO / "Makefile").read_text()
    assert "--require-hashes -r requirements-test.lock" in makefile
