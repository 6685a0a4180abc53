"""The README's examples must stay true: its AgentDeployment validates against the spec."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from occurrence_operator.model.spec import AgentDeploymentSpec

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_agentdeployment_is_valid() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    docs = [yaml.safe_load(b) for b in blocks]
    agds = [d for d in docs if d.get("kind") == "AgentDeployment"]
    assert agds, "README has no AgentDeployment example"
    for doc in agds:
        assert doc["apiVersion"] == "occurrence.dev/v1alpha1"
        spec = AgentDeploymentSpec.model_validate(doc["spec"])
        assert spec.database.secret_ref.key == "url"


def test_readme_starts_with_the_two_setup_commands() -> None:
    first = README.read_text().split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split()[0:2] for line in first] == [["make", "demo"], ["make", "test"]]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "\nmake test\n" in ci


def test_every_test_the_guarantees_name_exists() -> None:
    """Each guarantee names the test that proves it: that test must be there."""
    text = README.read_text()
    guarantees = text.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    refs = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", guarantees)
    assert len(refs) >= 20, "the guarantees section names its tests"
    for path, name in refs:
        source = (README.parent / path).read_text()
        assert re.search(rf"^(async )?def {name}\(", source, re.M), f"{path}::{name} is gone"
