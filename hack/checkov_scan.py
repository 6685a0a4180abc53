"""Scan everything a user installs, and what the operator creates, with checkov (`make lint`).

    .venv/bin/python hack/checkov_scan.py            # render, scan, exit 1 on a finding
    .venv/bin/python hack/checkov_scan.py --keep D   # keep the rendered files in D

What is scanned (rendered into a temporary directory, one file per source):

- ``chart/<values>.yaml``: ``helm template`` of the chart with each ``ci/*-values.yaml``,
  its ``helm test`` pod included;
- ``base/``: the kustomize base (``manifests/base``, plain resources);
- ``examples/``: ``manifests/examples``, ``manifests/autoscaling``, ``manifests/cloudnativepg``;
- ``operator/<example>.yaml``: what the operator renders
  (``occurrence_operator.render.objects``) for every AgentDeployment in those examples — the
  Job, Service, PDB, NetworkPolicy and StatefulSet it would apply.

checkov comes from PyPI at the version pinned, with hashes, in ``hack/checkov.lock``; it gets
its own virtualenv under the user cache (its ~90 pinned dependencies must not meet the
project's). Every check this project does not follow is in ``SKIPS`` below, named, scoped to
the resources it applies to, and justified — the one place. A skip that no longer matches a
finding fails the scan too, so the list cannot rot.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO / "hack"))

import render_packaging  # noqa: E402

from occurrence_operator.model.owner import Owner  # noqa: E402
from occurrence_operator.model.spec import AgentDeploymentSpec  # noqa: E402
from occurrence_operator.render.objects import render  # noqa: E402

CHART = REPO / "charts" / "occurrence-operator"
LOCK = REPO / "hack" / "checkov.lock"
PLAIN_DIRS = {
    "base": [REPO / "manifests" / "base"],
    "examples": [REPO / "manifests" / d for d in ("examples", "autoscaling", "cloudnativepg")],
}
# The uid is what the API server would assign; any value renders the same objects.
EXAMPLE_UID = "00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class Skip:
    """A checkov check this project does not follow, for the resources `kinds`/`name` match."""

    check: str
    why: str
    kinds: frozenset[str] = frozenset()  # empty: every kind
    name: str = ".*"  # a regex on the resource's name

    def matches(self, check: str, kind: str, name: str) -> bool:
        return (check == self.check and (not self.kinds or kind in self.kinds)
                and re.fullmatch(self.name, name) is not None)


WORKLOADS = frozenset({"Deployment", "StatefulSet", "Job", "Pod"})
HELM_TEST_POD = r".*-occurrence-operator-test"

SKIPS: tuple[Skip, ...] = (
    Skip("CKV_K8S_11", kinds=WORKLOADS, why=(
        "CPU limits: CFS throttling stalls a drain or a heartbeat while the node has spare "
        "CPU; every container sets CPU requests (scheduling) and a memory limit instead")),
    Skip("CKV_K8S_43", kinds=WORKLOADS, why=(
        "image digests: the image is the user's choice (`image`, chart `image.tag`), and a "
        "digest is accepted there; the shipped defaults name a release tag")),
    Skip("CKV_K8S_15", kinds=WORKLOADS, why=(
        "imagePullPolicy Always: the defaults are IfNotPresent with a release tag (a digest "
        "works too); Always would make every pod start depend on the registry, and clusters "
        "loaded without one (kind, air-gapped) could not start pods at all")),
    Skip("CKV_K8S_38", kinds=frozenset({"Deployment"}), name=r".*occurrence-operator", why=(
        "the operator's own token: it talks to the API server (agents and migrations pods "
        "set automountServiceAccountToken: false)")),
    Skip("CKV_K8S_38", kinds=frozenset({"Pod"}), name=HELM_TEST_POD, why=(
        "`helm test` checks through the API server that the CRD is served, with a "
        "ServiceAccount allowed to get that one CRD")),
    Skip("CKV_K8S_8", kinds=frozenset({"Pod"}), name=HELM_TEST_POD, why=(
        "`helm test` pod: runs to completion in seconds; a liveness probe does not apply")),
    Skip("CKV_K8S_9", kinds=frozenset({"Pod"}), name=HELM_TEST_POD, why=(
        "`helm test` pod: nothing sends it traffic; a readiness probe does not apply")),
    Skip("CKV2_K8S_6", kinds=frozenset({"Pod"}), name=HELM_TEST_POD, why=(
        "`helm test` pod: listens on nothing and lives for the seconds `helm test` runs")),
    Skip("CKV_K8S_35", kinds=frozenset({"Deployment"}), name="postgres", why=(
        "the example PostgreSQL (manifests/examples, for trying things only) is configured "
        "through the official image's POSTGRES_* environment, from its Secret")),
    Skip("CKV_K8S_40", kinds=frozenset({"Deployment"}), name="postgres", why=(
        "the example PostgreSQL runs as uid 999, the image's postgres user, which owns its "
        "files; still non-root under the restricted Pod Security Standard")),
    Skip("CKV_K8S_35", kinds=frozenset({"StatefulSet", "Job"}), why=(
        "the database URL reaches agents and migrations as an env var from a secretKeyRef "
        "(never in the spec); the agent also reads DATABASE_URL_FILE, so a policy that "
        "wants files can mount the Secret instead (docs/reference.md)")),
)


def _load_lock_hash() -> str:
    return hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]


def ensure_checkov() -> Path:
    """The pinned checkov's executable, installed into a virtualenv of its own on first use
    (a marker file says the install finished; an interrupted one is started over)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "occurrence-operator"
    venv = cache / f"checkov-{_load_lock_hash()}"
    done = venv / ".installed"
    if not done.is_file():
        shutil.rmtree(venv, ignore_errors=True)
        print(f"[checkov] installing the pinned checkov into {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet",
                        "--disable-pip-version-check", "--no-deps", "--require-hashes",
                        "-r", str(LOCK)], check=True)
        done.touch()
    return venv / "bin" / "checkov"


def find_helm() -> str:
    """render_packaging's helm ($HELM, the local cluster's, PATH); else the local cluster's
    binaries are built (once, cached) for it."""
    if found := render_packaging.find_helm():
        return found
    subprocess.run(["bash", str(REPO / "hack" / "local-cluster.sh"), "build"], check=True)
    return str(REPO / ".cluster" / "bin" / "helm")


def _yaml_files(directories: Iterable[Path]) -> Iterator[Path]:
    for directory in directories:
        for path in sorted(directory.glob("*.yaml")):
            if not path.name.startswith("kustomiz"):
                yield path


def _agent_deployments(paths: Iterable[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "AgentDeployment":
                yield f"{path.parent.name}-{path.stem}", doc


def render_all(out: Path, helm: str) -> None:
    """Write every file the scan reads into `out` (see the module docstring)."""
    (out / "chart").mkdir(parents=True)
    for values in sorted((CHART / "ci").glob("*.yaml")):
        rendered = subprocess.run(
            [helm, "template", "occ", str(CHART), "--namespace", "occ-system",
             "--values", str(values)], check=True, capture_output=True, text=True).stdout
        (out / "chart" / values.name).write_text(rendered)
    for group, directories in PLAIN_DIRS.items():
        (out / group).mkdir()
        for path in _yaml_files(directories):
            shutil.copy(path, out / group / f"{path.parent.name}-{path.name}")
    (out / "operator").mkdir()
    for label, doc in _agent_deployments(_yaml_files(PLAIN_DIRS["examples"])):
        meta = doc["metadata"]
        owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=EXAMPLE_UID)
        spec = AgentDeploymentSpec.model_validate(doc["spec"])
        objects = render(spec, owner, replicas=spec.replicas).objects()
        (out / "operator" / f"{label}.yaml").write_text(yaml.safe_dump_all(objects))


@dataclass(frozen=True)
class Finding:
    check: str
    title: str
    kind: str
    name: str
    file: str


def _resource_kind_and_name(resource: str) -> tuple[str, str]:
    """checkov names a Kubernetes resource `Kind.namespace.name[.labels...]`."""
    kind, _, rest = resource.partition(".")
    _, _, rest = rest.partition(".")
    name = rest.split(".app.kubernetes.io/")[0].split(".occurrence.dev/")[0]
    return kind, name


def scan(checkov: Path, directory: Path) -> list[Finding]:
    proc = subprocess.run(
        [str(checkov), "--directory", str(directory), "--framework", "kubernetes",
         "--output", "json", "--quiet", "--compact", "--skip-download"],
        capture_output=True, text=True, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise SystemExit(f"checkov failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    reports = json.loads(proc.stdout)
    findings = []
    for report in reports if isinstance(reports, list) else [reports]:
        for failed in report.get("results", {}).get("failed_checks", []):
            kind, name = _resource_kind_and_name(failed["resource"])
            findings.append(Finding(failed["check_id"], failed["check_name"], kind, name,
                                    failed["file_path"]))
    return findings


def judge(findings: list[Finding]) -> tuple[list[Finding], list[Skip]]:
    """The findings no skip covers, and the skips that covered nothing."""
    used: set[Skip] = set()
    open_findings = []
    for finding in findings:
        covering = [s for s in SKIPS if s.matches(finding.check, finding.kind, finding.name)]
        used.update(covering)
        if not covering:
            open_findings.append(finding)
    return open_findings, [s for s in SKIPS if s not in used]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, help="render into this (new) directory and keep it")
    args = parser.parse_args(argv)
    checkov = ensure_checkov()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "scan"
        render_all(out, find_helm())
        findings = scan(checkov, out)
    open_findings, stale = judge(findings)
    for f in open_findings:
        print(f"checkov: {f.check} {f.title}: {f.kind} {f.name} ({f.file})")
    for s in stale:
        print(f"checkov: skip {s.check} for {sorted(s.kinds) or 'all'} {s.name!r} matches "
              "nothing any more: remove it from SKIPS in hack/checkov_scan.py")
    skipped = len(findings) - len(open_findings)
    print(f"checkov: {len(findings)} findings, {skipped} covered by {len(SKIPS)} justified "
          f"skips, {len(open_findings)} open, {len(stale)} stale skips")
    return 1 if open_findings or stale else 0


if __name__ == "__main__":
    sys.exit(main())
