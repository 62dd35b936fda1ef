"""ops/prometheus: the rules and the scrape config pass Prometheus's own checker and unit tests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from ruamel.yaml import YAML

from slidr.settings import PROJECT_ROOT, MonitorSettings, TritonSettings, WorkerSettings
from streams.metrics import WorkerMetrics
from streams.monitor.consumer import MonitorMetrics

OPS = PROJECT_ROOT / "ops" / "prometheus"
GRAFANA = PROJECT_ROOT / "ops" / "grafana"
#: A slidr metric or recording-rule name in a PromQL expression.
NAME = re.compile(r"\bslidr[_:][a-z0-9_:]*[a-z0-9_]")
#: The series names each metric type exposes (prometheus_client's naming).
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}


def load(path: str) -> Any:
    return YAML(typ="safe").load((PROJECT_ROOT / path).read_text())


def exported() -> set[str]:
    """Every series name the worker and the monitor export."""
    names: set[str] = set()
    for metrics in (WorkerMetrics(), MonitorMetrics()):
        registry: CollectorRegistry = metrics.registry
        for family in registry.collect():
            names.update(family.name + s for s in SUFFIXES[family.type])
    return names


def rule_exprs() -> list[str]:
    return [r["expr"] for g in load("ops/prometheus/rules.yml")["groups"] for r in g["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((GRAFANA / "dashboards" / "slidr.json").read_text())
    return loaded


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:  # a failure, not a skip: CI must run these checks
        pytest.fail("promtool is not installed: `make setup` installs Debian's prometheus")
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=120, check=False, cwd=OPS
    )


def test_promtool_accepts_the_rules() -> None:
    done = promtool("check", "rules", "rules.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_unit_tests_pass() -> None:
    done = promtool("test", "rules", "rules_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_unit_test_and_a_docs_entry() -> None:
    rules = YAML(typ="safe").load((OPS / "rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = YAML(typ="safe").load((OPS / "rules_test.yml").read_text())
    tested = {a["alertname"] for t in tests["tests"] for a in t.get("alert_rule_test", [])}
    assert alerts - tested == set()
    # at least one test where the alert fires, not only where it stays quiet
    firing = {
        a["alertname"]
        for t in tests["tests"]
        for a in t.get("alert_rule_test", [])
        if a.get("exp_alerts")
    }
    assert alerts - firing == set()
    docs = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    assert {a for a in alerts if f"### {a}" not in docs} == set()


def test_promtool_accepts_the_compose_scrape_config() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_compose_scrape_config_targets_the_settings_ports() -> None:
    config = YAML(typ="safe").load((OPS / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {
        "slidr-worker": [f"127.0.0.1:{WorkerSettings().metrics_port}"],
        "slidr-monitor": [f"127.0.0.1:{MonitorSettings().metrics_port}"],
        "triton": [f"{TritonSettings().host}:{TritonSettings().metrics_port}"],
    }


def test_rules_and_dashboard_name_only_series_that_exist() -> None:
    """A misspelt name is no error to Prometheus: the rule or panel would just stay empty."""
    recorded = {
        r["record"] for g in load("ops/prometheus/rules.yml")["groups"] for r in g["rules"]
        if "record" in r
    }  # fmt: skip
    known = exported() | recorded
    panels = [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]
    used = {name for expr in rule_exprs() + panels for name in NAME.findall(expr)}
    assert used - known == set()
    assert recorded - used == set(), "a recording rule nothing uses"


def test_grafana_is_provisioned_with_the_compose_prometheus() -> None:
    compose = load("docker-compose.yml")["services"]
    listen = next(
        a.split("=", 1)[1]
        for a in compose["prometheus"]["command"]
        if a.startswith("--web.listen-address=")
    )
    (source,) = load("ops/grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert source["url"] == f"http://{listen}"
    assert "./ops/prometheus:/etc/prometheus:ro" in compose["prometheus"]["volumes"]
    (provider,) = load("ops/grafana/provisioning/dashboards/slidr.yml")["providers"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in compose["grafana"]["volumes"])
    assert mounts["./ops/grafana/dashboards"] == provider["options"]["path"]
    uids = {t["datasource"]["uid"] for p in dashboard()["panels"] for t in [p, *p["targets"]]}
    assert uids == {source["uid"]}


def test_a_failing_reload_keeps_its_alert_expression_true_between_retries() -> None:
    """Retries come at most ``reload_backoff_max_s`` apart: a shorter increase() range would
    drop to 0 between two of them and restart the alert's ``for`` every time."""
    rules = load("ops/prometheus/rules.yml")["groups"][0]["rules"]
    expr = next(r["expr"] for r in rules if r.get("alert") == "SlidrModelReloadFailing")
    window = re.search(r"slidr_model_reload_failures_total\{[^}]*\}\[(\d+)m\]", expr)
    assert window is not None, expr
    assert int(window[1]) * 60 > 2 * WorkerSettings().reload_backoff_max_s
