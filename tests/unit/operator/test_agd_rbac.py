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


def test_secrets_are_read_by_name_and_created_never_listed_or_changed() -> None:
    role = next(d for d in yaml.safe_load_all(RBAC_FILE.read_text()) if d["kind"] == "ClusterRole")
    secret_rules = [r for r in role["rules"] if "secrets" in r["resources"]]
    # get: the database URL by name; create: the agent token Secret, once (rotation is a
    # delete by the user). Never list/watch (every Secret's contents), never patch/delete.
    assert [r["verbs"] for r in secret_rules] == [["get", "create"]]
    assert not any("*" in r["verbs"] or "*" in r["resources"] for r in role["rules"])
