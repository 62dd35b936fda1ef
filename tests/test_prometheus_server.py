"""A real Prometheus (Debian's package) scrapes a real worker and evaluates
ops/prometheus/rules.yml; the rules' results and the dashboard's queries are read back through
its HTTP API."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from slidr.settings import PROJECT_ROOT, Settings
from tests.factories import mixed_traffic
from tests.stack_fixtures import free_ports
from tests.worker_harness import WorkerProcess, consume, produce

pytestmark = pytest.mark.integration

RULES = PROJECT_ROOT / "ops" / "prometheus" / "rules.yml"
DASHBOARD = PROJECT_ROOT / "ops" / "grafana" / "dashboards" / "slidr.json"
#: Grafana's own variables, replaced before a dashboard query is sent to Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1s", "$__range": "5m"}


class PrometheusServer:
    """`prometheus` on loopback, a free port and a temporary storage folder."""

    def __init__(self, workdir: Path, targets: dict[str, int]) -> None:
        """``targets``: the metrics port of each scrape job."""
        exe = shutil.which("prometheus")
        if exe is None:  # a failure, not a skip: CI must run this check
            pytest.fail("prometheus is not installed: `make setup` installs Debian's prometheus")
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        # JSON is YAML: one scrape and one rule evaluation a second.
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                        for job, port in targets.items()
                    ],
                }
            )
        )
        self.log_path = workdir / "prometheus.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    exe,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=log,
            )

    def get(self, path: str, **params: str) -> dict[str, Any]:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400 for a query that does not parse
            body = json.loads(exc.read())
            exc.close()
        return body

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = self.get("/api/v1/query", query=promql)
        assert body["status"] == "success", (promql, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready in {timeout_s} s: {self.log()}")

    def wait_for(self, promql: str, timeout_s: float = 60) -> list[dict[str, Any]]:
        """The query's result once it is not empty."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if result := self.query(promql):
                return result
            time.sleep(0.5)
        raise AssertionError(f"{promql} stayed empty for {timeout_s} s: {self.log()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture
def prometheus(worker_settings: Settings, tmp_path: Path) -> Iterator[PrometheusServer]:
    # No monitor runs: its target is a port nobody listens on.
    targets = {
        "slidr-worker": worker_settings.worker.metrics_port,
        "slidr-monitor": free_ports(1)[0],
    }
    server = PrometheusServer(tmp_path, targets)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def value(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])


def test_prometheus_scrapes_a_worker_and_evaluates_the_rules(
    worker_settings: Settings, worker: WorkerProcess, prometheus: PrometheusServer
) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    # A counter series appears at its first increment: a first wave creates the series, a
    # second one (after Prometheus saw them) is what the rates are made of.
    first = mixed_traffic(300, "prom-a", start)
    produce(worker_settings, first)
    decided = consume(worker_settings, worker_settings.topics.decisions, 300, timeout_s=90)
    assert len({d["click_id"] for d in decided}) == 300, worker.log()
    up = prometheus.wait_for('up{job="slidr-worker"} == 1', timeout_s=30)
    assert len(up) == 1
    prometheus.wait_for("slidr_clicks_total")
    time.sleep(2)  # at least two scrapes of every series before the second wave
    second = mixed_traffic(300, "prom-b", start + timedelta(minutes=10))
    produce(worker_settings, second)
    decided = consume(worker_settings, worker_settings.topics.decisions, 600, timeout_s=90)
    assert len({d["click_id"] for d in decided}) == 600, worker.log()

    # The recording rule the traffic panels use: decisions per second by slice and verdict.
    # A pair of both waves has a rate once the second wave is scraped and evaluated; a pair of
    # one wave only may or may not (a series' first sample has no increase to rate yet).
    first_ids = {c.click_id for c in first}
    pairs = [{(d["slice"], d["verdict"]) for d in decided if (d["click_id"] in first_ids) == w}
             for w in (True, False)]  # fmt: skip
    both, either = pairs[0] & pairs[1], pairs[0] | pairs[1]
    deadline = time.monotonic() + 30
    while True:
        rates = prometheus.wait_for("slidr:clicks:rate1m > 0")
        seen = {(s["metric"]["slice"], s["metric"]["verdict"]) for s in rates}
        if both <= seen or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert both and both <= seen <= either, (both, seen, either)
    assert set(rates[0]["metric"]) == {"__name__", "slice", "verdict"}
    # The fleet IVR is a share, and the worker's invalid decisions show up in it once they
    # have a rate (an invalid series of one wave only may have none, as above).
    invalid = sum(d["verdict"] == "invalid" for d in decided)
    invalid_rated = any(verdict == "invalid" for _, verdict in seen)
    (ivr,) = prometheus.wait_for('slidr:ivr:ratio_rate5m{slice="all"} >= 0')
    assert 0 <= value(ivr) <= 1, ivr
    if invalid_rated:
        assert value(ivr) > 0, (ivr, seen)
    if invalid == 0:
        assert value(ivr) == 0, ivr
    # The model version the worker serves, and the batches it scored.
    (versions,) = prometheus.wait_for("slidr:model_version:distinct")
    assert value(versions) == 1
    (batches,) = prometheus.wait_for("slidr:batches_by_instance:rate5m > 0")
    assert batches["metric"]["instance"] == f"127.0.0.1:{worker_settings.worker.metrics_port}"

    # Every rule evaluates without error against what a real worker exports.
    groups = prometheus.get("/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) >= 20
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    # A healthy worker raises no alert (the IVR alert has no expectation without the monitor);
    # the monitor's target, down, is about to (pending for its 2 minutes).
    alerts = prometheus.get("/api/v1/alerts")["data"]["alerts"]
    assert [(a["labels"]["alertname"], a["labels"]["job"], a["state"]) for a in alerts] == [
        ("SlidrTargetDown", "slidr-monitor", "pending")
    ]


def test_every_dashboard_query_runs_on_prometheus(
    worker_settings: Settings, worker: WorkerProcess, prometheus: PrometheusServer
) -> None:
    produce(worker_settings, mixed_traffic(100, "dash", datetime.now(UTC) - timedelta(hours=1)))
    consume(worker_settings, worker_settings.topics.decisions, 100, timeout_s=90)
    prometheus.wait_for("slidr_clicks_total")
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    for expr in exprs:
        for name, replacement in GRAFANA_VARIABLES.items():
            expr = expr.replace(name, replacement)
        body = prometheus.get("/api/v1/query", query=expr)
        assert body["status"] == "success", (expr, body)
        for sample in body["data"]["result"]:
            assert not math.isinf(value(sample)), (expr, sample)
