"""``slidr calibrate``: per-slice thresholds for a model version, served without a restart."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from slidr.cli.offline import ArchiveOption, archive_root, report_dir_for, say
from slidr.cli.options import setting_option
from slidr.console import make_console
from slidr.settings import get_settings


def _day(text: str, option: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a day (YYYY-MM-DD)", param_hint=option) from None


def calibrate(
    calibrate_day: Annotated[
        str,
        typer.Option(
            "--calibrate-day",
            envvar="SLIDR_CALIBRATE_DAY",
            help="The held-out day (YYYY-MM-DD) whose curves set the thresholds; not a day the "
            "version was trained on.",
        ),
    ],
    eval_day: Annotated[
        str,
        typer.Option(
            "--eval-day",
            envvar="SLIDR_CALIBRATE_EVAL_DAY",
            help="A later day (YYYY-MM-DD) on which the thresholds are compared with one "
            "global threshold.",
        ),
    ],
    version: Annotated[
        int | None,
        typer.Option(
            "--version",
            min=1,
            envvar="SLIDR_CALIBRATE_VERSION",
            help="The model version to calibrate. Default: the serving version.",
        ),
    ] = None,
    archive: ArchiveOption = None,
    budget: float | None = setting_option(
        "calibration",
        "fpr_budget",
        "Ceiling on the FPR over all purchasing clicks, e.g. 0.02. Default: setting.",
        "--budget",
        min=1e-6,
        max=0.999999,
    ),
    budget_confidence: float | None = setting_option(
        "calibration",
        "budget_confidence",
        "The budget binds the FPR estimate's one-sided upper bound at this confidence; 0.5 "
        "binds the estimate itself. Default: setting.",
        "--budget-confidence",
        min=0.5,
        max=0.999999,
    ),
    min_coverage: float | None = setting_option(
        "calibration",
        "min_coverage",
        "Robotic coverage every slice must reach. Default: setting.",
        "--min-coverage",
        min=0.0,
        max=1.0,
    ),
    report_dir: Annotated[
        Path | None,
        typer.Option(
            "--report-dir",
            envvar="SLIDR_CALIBRATE_REPORT_DIR",
            help="Where calibration-report.json and one PNG per slice go. "
            "Default: <state_dir>/runs/calibrate-<UTC time>.",
            file_okay=False,
        ),
    ] = None,
    write: Annotated[
        bool,
        typer.Option(
            "--write/--no-write",
            envvar="SLIDR_CALIBRATE_WRITE",
            help="Serve the thresholds: write the version's calibration.json (the worker "
            "reloads it). --no-write only reports.",
        ),
    ] = True,
) -> None:
    """Choose a threshold per traffic slice: the most invalidations within one FPR budget.

    Scores both days with the version in-process, fits each slice's IVR-FPR curve, solves one
    convex problem over all slices (each reaching the minimum robotic coverage) and compares
    the result with one global threshold on the later day. A budget too small for the
    coverage floors, or a solver failure, writes nothing (the served thresholds stay) and
    exits with code 2.
    """
    from calibration.calibrate import run
    from calibration.errors import CalibrationError
    from calibration.record import write_record
    from calibration.report import print_table, write_report
    from models.dataset import load_labelled
    from models.scoring import score_version
    from slidr.model_record import load_record, serving_version

    days = _day(calibrate_day, "--calibrate-day"), _day(eval_day, "--eval-day")
    if days[1] <= days[0]:
        raise typer.BadParameter(
            f"{days[1]} is not after {days[0]}: evaluate on a later day than you calibrate on",
            param_hint="--eval-day",
        )
    settings = get_settings().overriding(
        "calibration",
        fpr_budget=budget,
        budget_confidence=budget_confidence,
        min_coverage=min_coverage,
    )
    calibration = settings.calibration
    root = archive_root(settings, archive)
    repo, name = settings.triton.model_repository, settings.triton.model_name
    version = version or serving_version(repo, name)
    served = load_record(repo, name, version, settings.worker.global_threshold)
    frames = []
    for day in days:
        frame, _ = load_labelled(root, settings.learn, [day], calibration.slice_fields)
        frame["score"] = score_version(repo, name, version, frame)
        frames.append(frame)
        say(f"{day}: {len(frame):,} labelled clicks scored by version {version}")
    same_slicing = served.slice_fields == calibration.slice_fields
    outcome = run(
        frames[0],
        frames[1],
        calibration,
        model_version=version,
        default_threshold=settings.worker.global_threshold,
        last_good=served.thresholds if same_slicing else None,
    )
    out = report_dir_for(settings, report_dir, "calibrate")
    write_report(outcome, out)
    print_table(outcome, make_console())
    say(f"report: {out}")
    if not outcome.calibrated:
        raise CalibrationError(outcome.message)
    if write:
        path = write_record(outcome, repo, name)
        say(f"wrote {path}; workers serving version {version} switch within seconds")
