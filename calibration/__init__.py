"""Slice-level calibration: per-slice thresholds from one convex problem under an FPR budget.

``run`` (calibrate.py) is the core; ``write_record`` serves its thresholds, ``write_report``
and ``print_table`` show it to people. The streaming path never imports this package.
"""

from calibration.calibrate import CalibrationOutcome, Policy, Status, run
from calibration.errors import CalibrationError
from calibration.record import write_record
from calibration.report import print_table, write_report

__all__ = [
    "CalibrationError",
    "CalibrationOutcome",
    "Policy",
    "Status",
    "print_table",
    "run",
    "write_record",
    "write_report",
]
