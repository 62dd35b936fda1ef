"""ops/prometheus: the rules and the scrape config pass Prometheus's own checker and unit tests."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from ruamel.yaml import YAML

from slidr.settings import PROJECT_ROOT, MonitorSettings, TritonSettings, WorkerSettings

OPS = PROJECT_ROOT / "ops" / "prometheus"


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
