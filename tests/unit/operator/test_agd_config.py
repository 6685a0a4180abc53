"""The operator's configuration: flags and environment variables, read once by the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from occurrence_operator.cli import PRIORITY_SPREAD, build_config, build_parser
from occurrence_operator.reconcile.config import OperatorConfig, OperatorEnvironment, SettingsError


def test_defaults() -> None:
    config = build_config(["--namespace", "a"], {})
    assert config.namespaces == ("a",) and not config.all_namespaces
    assert config.peering is None and config.priority is None
    assert config.liveness == "http://0.0.0.0:8080/healthz"
    assert config.metrics_address == "0.0.0.0:9090"
    assert config.metrics_endpoint == ("0.0.0.0", 9090)
    assert config.resync_seconds == 300 and config.peering_lifetime is None
    assert config.instance  # the host name
    assert (config.log_format, config.verbose) == ("json", False)


def test_environment_variables() -> None:
    env = {
        "OCCURRENCE_OPERATOR_LIVENESS": "http://127.0.0.1:1/healthz",
        "OCCURRENCE_OPERATOR_METRICS_ADDRESS": "",
        "OCCURRENCE_OPERATOR_RESYNC_SECONDS": "2",
        "OCCURRENCE_OPERATOR_PEERING_LIFETIME": "7",
        "POD_NAME": "occurrence-operator-0",
        "POD_NAMESPACE": "occurrence-system",
        "POD_SERVICE_ACCOUNT": "occurrence-operator",
    }
    config = build_config(["-A"], env)
    assert config.own_service_account == ("occurrence-system", "occurrence-operator")
    assert build_config(["-A"], {}).own_service_account is None
    assert config.all_namespaces and config.namespaces == ()
    assert config.liveness == "http://127.0.0.1:1/healthz"
    assert config.metrics_address == "" and config.metrics_endpoint is None
    assert (config.resync_seconds, config.peering_lifetime) == (2.0, 7)
    assert config.instance == "occurrence-operator-0"


def test_flags_win_over_the_environment() -> None:
    env = {"OCCURRENCE_OPERATOR_METRICS_ADDRESS": "0.0.0.0:1",
           "OCCURRENCE_OPERATOR_LIVENESS": "http://0.0.0.0:2/healthz"}
    config = build_config(["-n", "a", "-n", "b", "--metrics-address", "127.0.0.1:9",
                           "--liveness", "", "--peering", "occ", "--priority", "2",
                           "--log-format", "plain", "-v"], env)
    assert config.namespaces == ("a", "b")
    assert config.metrics_endpoint == ("127.0.0.1", 9) and config.liveness == ""
    assert config.peering == "occ" and config.priority is not None
    assert 2 * PRIORITY_SPREAD <= config.priority < 3 * PRIORITY_SPREAD
    assert (config.log_format, config.verbose) == ("plain", True)


def test_building_the_config_writes_no_environment() -> None:
    before = dict(os.environ)
    build_config(["-n", "a", "--metrics-address", "127.0.0.1:9"])
    assert dict(os.environ) == before


def test_the_config_is_immutable_and_checked() -> None:
    config = build_config(["-n", "a"], {})
    with pytest.raises(ValidationError):
        config.resync_seconds = 1  # type: ignore[misc]
    with pytest.raises(SettingsError):
        build_config(["-n", "a"], {"OCCURRENCE_OPERATOR_RESYNC_SECONDS": "0"})
    with pytest.raises(ValidationError):
        OperatorConfig(instance="")


@pytest.mark.parametrize(("name", "value", "message"), [
    ("OCCURRENCE_OPERATOR_RESYNC_SECONDS", "abc",
     "OCCURRENCE_OPERATOR_RESYNC_SECONDS='abc': Input should be a valid number, unable to "
     "parse string as a number"),
    ("OCCURRENCE_OPERATOR_RESYNC_SECONDS", "0",
     "OCCURRENCE_OPERATOR_RESYNC_SECONDS='0': Input should be greater than 0"),
    ("OCCURRENCE_OPERATOR_PEERING_LIFETIME", "1.5",
     "OCCURRENCE_OPERATOR_PEERING_LIFETIME='1.5': Input should be a valid integer"),
    ("OCCURRENCE_OPERATOR_METRICS_ALLOWED_FROM", "[{",
     "OCCURRENCE_OPERATOR_METRICS_ALLOWED_FROM: not JSON"),
    ("OCCURRENCE_OPERATOR_METRICS_ALLOWED_FROM", '[{"namespaceSelector": {}, "ports": []}]',
     'OCCURRENCE_OPERATOR_METRICS_ALLOWED_FROM: {"namespaceSelector": {}, "ports": []} is not '
     "a NetworkPolicyPeer"),
    ("OCCURRENCE_OPERATOR_METRICS_ALLOWED_FROM", '{"podSelector": {}}',
     "OCCURRENCE_OPERATOR_METRICS_ALLOWED_FROM: a JSON list of at most 16"),
])
def test_a_bad_environment_is_one_line_naming_the_variable_and_the_value(
        name: str, value: str, message: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCCURRENCE_OPERATOR_")}
    done = subprocess.run([sys.executable, "-m", "occurrence_operator.cli", "-n", "a"],
                          env={**env, name: value}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"occurrence-operator: error: {message}"), done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr


def test_every_setting_is_in_the_help() -> None:
    text = " ".join(build_parser().format_help().split())
    for name, field in OperatorEnvironment.model_fields.items():
        variable = OperatorEnvironment.variable(str(field.validation_alias or name))
        assert variable in text, variable


def test_in_a_pod_a_tenants_sqlite_url_is_refused() -> None:
    assert build_config(["-n", "a"], {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}).in_cluster
    assert not build_config(["-n", "a"], {}).in_cluster


def test_the_platforms_scrapers_are_a_list_of_network_policy_peers() -> None:
    monitoring = {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}
    env = {"OCCURRENCE_OPERATOR_METRICS_ALLOWED_FROM": json.dumps([monitoring])}
    assert build_config(["-n", "a"], env).metrics_allowed_from == (monitoring,)
    assert build_config(["-n", "a"], {}).metrics_allowed_from == ()
    with pytest.raises(SettingsError, match="at most 16"):
        build_config(["-n", "a"], {"OCCURRENCE_OPERATOR_METRICS_ALLOWED_FROM":
                                   json.dumps([monitoring] * 17)})
