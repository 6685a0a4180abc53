"""The alert rules and the dashboard: promtool checks and unit-tests the rules, and every
series they (and the dashboard) read is one the operator or an agent really exposes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from occurrence_agent.metrics import AgentMetrics
from occurrence_operator.kube.metrics import OperatorMetrics

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "charts" / "occurrence-operator" / "files" / "alerts.yaml"
DASHBOARD = REPO / "charts" / "occurrence-operator" / "files" / "dashboard.json"
RULE_TESTS = REPO / "tests" / "alerts" / "alerts.test.yaml"
RUNBOOK = REPO / "docs" / "alerts.md"


@pytest.fixture(scope="module")
def promtool() -> str:
    """promtool from PATH or the project's cache (`make test` runs hack/ensure-promtool.sh)."""
    done = subprocess.run(["bash", str(REPO / "hack" / "ensure-promtool.sh")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"no promtool: {done.stderr}"
    return done.stdout.strip().splitlines()[-1]


def _exposed_series() -> set[str]:
    """Every sample name the operator's and an agent's metrics can show."""
    names: set[str] = set()
    text = OperatorMetrics().render() + AgentMetrics("w-0").render()
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        if kind == "counter":  # the TYPE line names the family with or without _total
            names.add(family if family.endswith("_total") else f"{family}_total")
        elif kind in ("summary", "histogram"):
            names |= {f"{family}_sum", f"{family}_count", family}
            if kind == "histogram":
                names.add(f"{family}_bucket")
        else:
            names.add(family)
    return names


def _series_in(expr: str) -> set[str]:
    """Metric names an expression reads (label matchers and grouping clauses removed, so
    label names such as `occurrence_id` are not mistaken for metrics)."""
    bare = re.sub(r"\{[^}]*\}", "", expr)
    bare = re.sub(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    bare = re.sub(r"label_values\(([^,()]+),[^)]*\)", r"\1", bare)
    return set(re.findall(r"\b(occurrence_[a-z0-9_]+)\b", bare))


def _rule_exprs() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def _dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in board["panels"] for t in panel["targets"]]
    exprs += [v["query"]["query"] for v in board["templating"]["list"]
              if isinstance(v.get("query"), dict)]
    return exprs


def test_promtool_checks_the_rules(promtool: str) -> None:
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rule_exprs())} rules found" in done.stdout


def test_promtool_unit_tests_fire_and_stay_quiet(promtool: str) -> None:
    done = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], capture_output=True,
                          text=True, timeout=120, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == set(_rule_exprs()), "an alert without a promtool test"


def test_the_reference_systems_alerts_and_ours_are_all_there() -> None:
    assert set(_rule_exprs()) == {
        "OccurrenceSharedDecisionStuck", "OccurrenceClaimConflictsHigh",
        "OccurrenceWakeupWaitLong", "AgentDeploymentDegraded", "AgentDeploymentDrainTooLong",
        "AgentDeploymentMigrationsFailed", "OccurrenceBacklogGrowingWithStaleHeartbeat",
        "AgentDeploymentNoOccurrenceReady", "AgentDeploymentRolloutRolledBack",
        "AgentDeploymentRolloutInconclusive", "AgentDeploymentPausedLong",
        "OccurrenceOperatorDown", "OccurrenceOperatorReconcileErrors",
        "OccurrenceTasksExhaustingRetries"}


SCRAPE_HEALTH = {"OccurrenceOperatorDown"}
"""Alerts on Prometheus' own `up` series of the operator's scrape job, not on ours."""


@pytest.mark.parametrize("alert", sorted(_rule_exprs()))
def test_every_series_an_alert_reads_exists(alert: str) -> None:
    used = _series_in(_rule_exprs()[alert])
    if alert in SCRAPE_HEALTH:
        assert not used and re.search(r"\bup\{job=", _rule_exprs()[alert])
        return
    assert used, f"{alert} reads no occurrence series"
    assert used <= _exposed_series(), f"{alert} reads {sorted(used - _exposed_series())}"


def test_every_series_the_dashboard_reads_exists() -> None:
    used: set[str] = set()
    for expr in _dashboard_exprs():
        found = _series_in(expr)
        assert found, f"a query reads no occurrence series: {expr}"
        used |= found
    assert len(used) >= 10
    assert used <= _exposed_series(), sorted(used - _exposed_series())


def test_a_series_that_does_not_exist_is_caught() -> None:
    assert _series_in('rate(occurrence_made_up_total{occurrence_id="x"}[5m])') == {
        "occurrence_made_up_total"}
    assert "occurrence_made_up_total" not in _exposed_series()


def test_the_dashboard_is_valid_and_its_panels_are_distinct() -> None:
    board = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)) and all(panel["targets"] for panel in board["panels"])
    titles = " ".join(panel["title"].lower() for panel in board["panels"])
    for topic in ("backlog", "throughput", "drain", "transferred", "conflicts", "wakeup",
                  "replicas"):
        assert topic in titles, f"no panel about {topic}"


def test_every_alert_has_text_a_kubectl_command_and_a_runbook_section() -> None:
    runbook = RUNBOOK.read_text()
    anchors = {re.sub(r"[^a-z0-9-]", "", h.strip().lower().replace(" ", "-"))
               for h in re.findall(r"^### (.+)$", runbook, re.M)}
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        notes = rule["annotations"]
        assert notes["summary"] and "kubectl" in notes["description"], rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert notes["runbook"] == f"docs/alerts.md#{rule['alert'].lower()}", rule["alert"]
        assert rule["alert"].lower() in anchors, f"docs/alerts.md has no ### {rule['alert']}"
