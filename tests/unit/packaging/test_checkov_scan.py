"""hack/checkov_scan.py's judgement, offline: which findings a skip covers, and stale skips.

The scan itself (checkov over the rendered chart, base, examples and the operator's objects)
runs in `make lint`; these tests pin the part that decides pass or fail."""

from __future__ import annotations

from tests.support.scripts import load_hack_script

scan = load_hack_script("checkov_scan")


def _finding(check: str, kind: str, name: str) -> object:
    return scan.Finding(check, "title", kind, name, "/file.yaml")


def test_checkov_names_kubernetes_resources_kind_namespace_name_then_labels() -> None:
    assert scan._resource_kind_and_name("Deployment.occ-system.occ-occurrence-operator") == (
        "Deployment", "occ-occurrence-operator")
    labelled = ("Pod.agents.thinker-migrate-09c02fdd14.app.kubernetes.io/name-occurrence-agent"
                ".occurrence.dev/component-migrations")
    assert scan._resource_kind_and_name(labelled) == ("Pod", "thinker-migrate-09c02fdd14")


def test_a_skip_covers_only_its_check_kinds_and_names() -> None:
    helm_test = next(s for s in scan.SKIPS if s.check == "CKV_K8S_8")
    assert helm_test.matches("CKV_K8S_8", "Pod", "occ-occurrence-operator-test")
    assert not helm_test.matches("CKV_K8S_8", "Deployment", "occ-occurrence-operator")
    assert not helm_test.matches("CKV_K8S_8", "Pod", "someone-elses-pod")
    assert not helm_test.matches("CKV_K8S_9", "Pod", "occ-occurrence-operator-test")


def test_a_finding_no_skip_covers_fails_the_scan_and_every_unused_skip_is_reported() -> None:
    covered = _finding("CKV_K8S_11", "StatefulSet", "demo-agent")
    uncovered = _finding("CKV_K8S_20", "StatefulSet", "demo-agent")  # privilege escalation
    open_findings, stale = scan.judge([covered, uncovered])
    assert open_findings == [uncovered]
    assert scan.SKIPS[0] not in stale and len(stale) == len(scan.SKIPS) - 1


def test_every_skip_says_why() -> None:
    for skip in scan.SKIPS:
        assert len(skip.why) > 40, skip.check
    assert len(set(scan.SKIPS)) == len(scan.SKIPS)
