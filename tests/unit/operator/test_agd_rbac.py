"""The committed RBAC manifest is the rendering of occurrence_operator.rbac."""

from __future__ import annotations

from pathlib import Path

import yaml

from occurrence_operator import rbac

RBAC_FILE = Path(__file__).resolve().parents[3] / "manifests" / "base" / "rbac.yaml"


def test_committed_rbac_is_the_rendering() -> None:
    assert RBAC_FILE.read_text() == rbac.render_yaml(), (
        "manifests/base/rbac.yaml is stale: python -m occurrence_operator.rbac > " + str(RBAC_FILE)
    )


def test_secrets_are_read_only_by_name() -> None:
    role = next(d for d in yaml.safe_load_all(RBAC_FILE.read_text()) if d["kind"] == "ClusterRole")
    secret_rules = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert [r["verbs"] for r in secret_rules] == [["get"]]
    assert not any("*" in r["verbs"] or "*" in r["resources"] for r in role["rules"])
