"""The operator's configuration: flags and environment variables, read once by the CLI."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from occurrence_operator.cli import PRIORITY_SPREAD, build_config
from occurrence_operator.config import OperatorConfig


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
    with pytest.raises(ValidationError):
        build_config(["-n", "a"], {"OCCURRENCE_OPERATOR_RESYNC_SECONDS": "0"})
    with pytest.raises(ValidationError):
        OperatorConfig(instance="")
