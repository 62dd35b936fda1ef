"""Time the data guardrails (every GX suite, results saved) on synthetic labelled frames.

    .venv/bin/python benchmarks/bench_guardrails.py [--rows 100000,1000000] [--repeat 2]

Each frame is 8 days (a new day and its trailing week) of the tests' synthetic labelled
clicks; the first run also pays for importing great_expectations, reported apart.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rich.table import Table

# The synthetic frames are the tests' own.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guardrails.data import check_training_data
from slidr.console import make_console
from slidr.settings import GuardrailSettings
from tests.test_guardrails_data import NEW_DAY, labelled_frame

DAYS = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated frame sizes")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per size")
    args = parser.parse_args()
    t0 = time.perf_counter()
    import great_expectations  # noqa: F401

    import_s = time.perf_counter() - t0
    settings = GuardrailSettings()
    table = Table("rows", "checks", "best seconds", "rows/s", title="data guardrails")
    for rows in (int(r) for r in args.rows.split(",")):
        frame = labelled_frame(days=DAYS, clicks_per_hour=rows // (DAYS * 24))
        timings = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                report = check_training_data(frame, NEW_DAY, settings, Path(out))
                timings.append(time.perf_counter() - t0)
            assert report.passed, report.to_markdown()
        best = min(timings)
        table.add_row(
            f"{len(frame):,}", str(len(report.checks)), f"{best:.2f}", f"{len(frame) / best:,.0f}"
        )
    console = make_console()
    console.print(table)
    console.print(f"import great_expectations: {import_s:.2f} s (once per process)")


if __name__ == "__main__":
    main()
