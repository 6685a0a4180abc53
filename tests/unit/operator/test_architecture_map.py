"""docs/architecture.md's map of the operator's layers names exactly the modules each folder
holds: a module added, moved or renamed without the map fails here, by name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PACKAGE = REPO / "operator" / "occurrence_operator"
MAP = REPO / "docs" / "architecture.md"

_FOLDER_CELL = re.compile(r"^\| [^|]+ \| `(?P<folder>[a-z_]+)/`: (?P<modules>[^|]+) \|", re.M)
_TOP_CELL = re.compile(r"^\| entry points \| top level: (?P<modules>[^|]+) \|", re.M)
_NAME = re.compile(r"`([a-z_]+(?:/[a-z_]+)?)`")


def _modules(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}


def _folders() -> list[str]:
    return sorted(p.name for p in PACKAGE.iterdir()
                  if p.is_dir() and (p / "__init__.py").exists())


def _mapped() -> dict[str, set[str]]:
    """folder -> the modules the map names for it; `` '' `` is the package's top level."""
    text = MAP.read_text()
    mapped: dict[str, set[str]] = {}
    top = _TOP_CELL.search(text)
    assert top is not None, "the map has no 'entry points' row"
    mapped[""] = set(_NAME.findall(top["modules"]))
    for row in _FOLDER_CELL.finditer(text):
        mapped.setdefault(row["folder"], set()).update(_NAME.findall(row["modules"]))
    # a capability named beside a layer's folder (`autoscaling/`), its modules as `folder/name`
    for folder, name in re.findall(r"`([a-z_]+)/([a-z_]+)`", text):
        mapped.setdefault(folder, set()).add(name)
    return mapped


def test_the_map_names_every_folder_of_the_package() -> None:
    mapped = _mapped()
    missing = [f for f in _folders() if f not in mapped]
    assert not missing, f"folders the map does not show: {missing}"


@pytest.mark.parametrize("folder", ["", *_folders()])
def test_the_map_names_exactly_the_modules_of(folder: str) -> None:
    actual = _modules(PACKAGE / folder if folder else PACKAGE)
    named = {n.split("/")[-1] for n in _mapped().get(folder, set())}
    assert actual - named == set(), f"{folder or 'top level'}: not in the map"
    assert named - actual == set(), f"{folder or 'top level'}: in the map, not in the tree"
