"""The daily cycle's HTML page, opened in a real headless Chromium (Debian's ``chromium``,
installed by scripts/setup.sh): it renders, is not blank, shows the key figures, embeds every
plot, and shows hostile text as text."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import calibration
from calibration.compare import measure
from calibration.report import SLICE_COLUMNS, slice_rows
from calibration.report import write_report as write_calibration_report
from guardrails.model import check_candidate
from guardrails.report import Check, GuardrailReport, Status
from models.cycle_page import PAGE_FILE, CycleParts, render_page, write_page
from models.daily import CycleResult, Step, by_slice, headline
from models.evaluate import evaluate
from models.report import HEADLINE_FPR, PLOTS, summary_rows, write_report
from slidr.settings import GuardrailSettings
from tests.test_calibration import SETTINGS, synthetic_day

#: Markup in a check's detail: if it were not escaped, Chromium would run it and blank the page.
HOSTILE = "<img src=x onerror=\"document.body.innerHTML=''\"><b>bold</b>"
CHROMIUM_TIMEOUT_S = 120


@dataclass(frozen=True)
class Rendered:
    result: CycleResult
    parts: CycleParts
    page: Path
    dom: str
    screenshot: Path


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: run scripts/setup.sh (Debian package chromium)")
    return found


def _open(page: Path, work: Path, *args: str) -> str:
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={work / 'profile'}",
        "--window-size=1200,900",
        *args,
        page.resolve().as_uri(),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """A promoted cycle's page, built from the same objects a cycle hands it."""
    run_dir = tmp_path_factory.mktemp("cycle")
    holdout, later = synthetic_day(1, "2026-01-05"), synthetic_day(2, "2026-01-06")
    rng = np.random.default_rng(3)
    held = holdout.assign(
        click_id=[f"c-{i}" for i in range(len(holdout))],
        hour=rng.integers(0, 24, len(holdout)).astype("int8"),
        label=(~holdout["purchased"]).astype("int8"),
    )
    serving_scores = 0.5 * held["score"] + 0.5 * rng.random(len(held))
    evaluation = evaluate(held, {"slidr_network": held["score"], "serving v6": serving_scores})
    write_report(evaluation, run_dir / "train", headline_fpr=HEADLINE_FPR)
    calibrated = calibration.run(holdout, later, SETTINGS, model_version=7)
    written = write_calibration_report(calibrated, run_dir / "calibration")

    mine = measure(later, calibrated.thresholds, 0.5)
    theirs = measure(later, {}, 0.8)
    model_report = check_candidate(
        by_slice(mine), by_slice(theirs), SETTINGS.fpr_budget, GuardrailSettings()
    )
    data_report = GuardrailReport(
        "training data 2026-01-06",
        (
            Check("rows", Status.PASSED, len(later), ">= 1000"),
            Check("hourly:purchases", Status.SKIPPED, None, ">= 1", detail=HOSTILE),
        ),
    )
    verdict = "within bounds" if model_report.passed else "model guardrails refused"
    result = CycleResult(
        day="2026-01-06",
        serving_before=6,
        candidate=7,
        promoted=model_report.passed,
        stopped_at=None if model_report.passed else "model guardrails",
        reason=None if model_report.passed else verdict,
        steps=[
            Step("load", True, 1.25, f"{len(later):,} labelled clicks"),
            Step("data guardrails", True, 0.5, "days 2026-01-05 .. 2026-01-06"),
            Step("train", True, 12.0, "candidate version 7"),
            Step("calibrate", True, 0.3, calibrated.message),
            Step("model guardrails", model_report.passed, 0.2, verdict),
        ],
        figures={"candidate v7": headline(mine), "serving v6": headline(theirs)},
    )
    parts = CycleParts(
        guardrails=[data_report, model_report],
        evaluation=evaluation,
        calibration=calibrated,
        plots=[
            *(run_dir / "train" / name for name in PLOTS),
            *(p for p in written if p.suffix == ".png"),
        ],
    )
    page = write_page(result, parts, run_dir)
    dom = _open(page, run_dir, "--dump-dom")
    screenshot = run_dir / "page.png"
    _open(page, run_dir, f"--screenshot={screenshot}")
    return Rendered(result, parts, page, dom, screenshot)


def _text(dom: str) -> str:
    """The DOM's text as one line of words (tags dropped, entities kept)."""
    return " ".join(re.sub(r"<[^>]+>", " ", dom).split())


def test_the_page_is_written_beside_the_run_files(rendered: Rendered) -> None:
    assert rendered.page.name == PAGE_FILE
    assert (rendered.page.parent / "calibration").is_dir()
    assert rendered.page.stat().st_size > 50_000  # the plots are inside


def test_chromium_renders_a_page_that_is_not_blank(rendered: Rendered) -> None:
    with Image.open(rendered.screenshot) as image:
        assert image.size == (1200, 900)
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    not_white = (pixels < 235).any(axis=2).mean()
    assert not_white > 0.03, f"only {not_white:.1%} of the screenshot is not white"
    # The verdict badge is drawn in colour, not only text in grey.
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    coloured = ((green - red > 60) & (green - blue > 30)) | ((red - green > 80) & (red > 150))
    assert coloured.sum() > 500


def test_the_rendered_page_holds_the_key_figures(rendered: Rendered) -> None:
    text = _text(rendered.dom)
    result = rendered.result
    assert "slidr daily cycle for 2026-01-06" in text
    assert "candidate version 7" in text and "version 6" in text
    verdict = "promoted: version 7 serves" if result.promoted else "refused at model guardrails"
    assert verdict in text
    for step in result.steps:
        assert step.name in text
    # Each guardrail report with its verdict and every check's observed value.
    for report in rendered.parts.guardrails:
        shown = "passed" if report.passed else f"refused ({len(report.failed)} failed)"
        assert f"{report.subject}: {shown}" in text
    assert "skipped" in text and "1000" in text
    # Candidate and serving on the later day: IVR and FPR as percentages.
    for name, figures in result.figures.items():
        cells = re.search(re.escape(name) + r" ((?:[\d.,]+%? )+)", text)
        assert cells is not None, name
        assert f"{figures['ivr']:.2%}" in cells[1] and f"{figures['fpr']:.2%}" in cells[1]
    # The model table at equal FPR, cell for cell.
    evaluation = rendered.parts.evaluation
    assert evaluation is not None
    for row in summary_rows(evaluation, headline_fpr=HEADLINE_FPR):
        assert " ".join(row) in text
    # Each slice's calibrated threshold.
    outcome = rendered.parts.calibration
    assert outcome is not None
    rows = {row[0]: row for row in slice_rows(outcome)}
    assert set(outcome.points) <= set(rows)
    for name, point in outcome.points.items():
        assert rows[name][SLICE_COLUMNS.index("threshold")] == f"{point.threshold:.4f}"
        assert " ".join(rows[name]) in text, name


def test_every_plot_is_embedded_and_nothing_is_fetched(rendered: Rendered) -> None:
    sources = re.findall(r'<img [^>]*src="([^"]*)"', rendered.dom)
    assert len(sources) == len(rendered.parts.plots) >= len(PLOTS) + 2
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert not re.search(r'(?:src|href)="(?!data:)', rendered.dom)


def test_hostile_text_is_shown_as_text(rendered: Rendered) -> None:
    # The detail survives as characters in the DOM, not as an <img> or a <b> element.
    assert "&lt;img src=x onerror=" in rendered.dom and "&lt;b&gt;bold&lt;/b&gt;" in rendered.dom
    assert "<b>bold</b>" not in rendered.dom


def test_a_cycle_stopped_before_training_still_gets_a_page() -> None:
    refused = GuardrailReport(
        "training data 2026-01-06",
        (Check("hourly:purchases", Status.FAILED, 10, "<= 6", detail="hours without purchases"),),
    )
    result = CycleResult(
        day="2026-01-06",
        serving_before=3,
        stopped_at="data guardrails",
        reason="data guardrails refused: hourly:purchases (observed 10, bound <= 6)",
        steps=[
            Step("load", True, 1.0, "9,000 labelled clicks"),
            Step("data guardrails", False, 0.4, "data guardrails refused: <= 6"),
        ],
    )
    html = render_page(result, CycleParts(guardrails=[refused]))
    assert "refused at data guardrails: version 3 keeps serving" in html
    assert "none (not trained)" in html
    assert "refused (1 failed)" in html and "&lt;= 6" in html
    assert "Models at equal FPR" not in html and "<img" not in html
