"""GIVT on a real worker: declared crawlers and data-centre clicks are decided by their lists,
the rest by the model, and the worker's metrics count GIVT apart."""

from __future__ import annotations

import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from slidr.events import Decision
from slidr.features import N_FEATURES
from slidr.settings import PROJECT_ROOT, GivtSettings, Settings
from tests.factories import make_click, mixed_traffic
from tests.worker_harness import WorkerProcess, consume, isolated, produce

pytestmark = pytest.mark.integration

EXAMPLE = PROJECT_ROOT / "ops" / "givt" / "datacenter-example.txt"
CRAWLERS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
]


def test_givt_clicks_are_decided_before_the_model(stack_settings: Settings, tmp_path: Path) -> None:
    settings = isolated(stack_settings)
    settings = settings.model_copy(update={"givt": GivtSettings(datacenter_cidr_files=(EXAMPLE,))})
    start = datetime.now(UTC) - timedelta(minutes=30)
    crawlers = [
        make_click(i, prefix="crawler", user_agent=CRAWLERS[i % 3], at=start, session=f"k{i}")
        for i in range(6)
    ]
    datacentre = [
        make_click(i, prefix="dc", ip=ip, at=start, session=f"d{i}")
        for i, ip in enumerate(["192.0.2.10", "203.0.113.5", "2001:db8:dc::7"])
    ]
    others = mixed_traffic(40, "human", start)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        produce(settings, crawlers + datacentre + others)
        decisions = consume(settings, settings.topics.decisions, 49, settle_s=2)
        assert len(decisions) == 49, worker.log()
        by_id = {d["click_id"]: d for d in decisions}
        for d in decisions:
            Decision.model_validate(d)
        for c in crawlers:
            d = by_id[c.click_id]
            assert (d["verdict"], d["ivt_category"]) == ("invalid", "givt")
            assert d["reason_codes"] == ["givt:declared_bot"]
        for c in datacentre:
            d = by_id[c.click_id]
            assert (d["verdict"], d["ivt_category"]) == ("invalid", "givt")
            assert d["reason_codes"] == ["givt:datacenter"]
        for c in others:
            d = by_id[c.click_id]
            assert d["ivt_category"] == "sivt" and not d["degraded"]
            assert not any(r.startswith("givt:") for r in d["reason_codes"])
            assert len(d["features"]) == N_FEATURES and 0.0 <= d["score"] <= 1.0
        time.sleep(0.5)
        url = f"http://127.0.0.1:{settings.worker.metrics_port}/metrics"
        body = urllib.request.urlopen(url, timeout=5).read().decode()
        counts = {
            line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith("slidr_givt_clicks_total{")
        }
        assert counts == {'category="declared_bot"': 6.0, 'category="datacenter"': 3.0}
        model_total = sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith("slidr_clicks_total{")
        )
        assert model_total == 40
    finally:
        worker.stop()
