"""The outcome of a guardrail run: named checks with observed values and bounds.

The daily cycle saves it with the run (``save``), prints it (``rich`` renders the report
itself), and refuses to promote on ``raise_if_failed``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from slidr.errors import SlidrError

Observed = float | int | str | None

#: Failed checks named in an exception message; the saved report has them all.
_MESSAGE_CHECKS = 5


class GuardrailError(SlidrError):
    """Root of the guardrail errors."""


class GuardrailFailed(GuardrailError):
    """A day of data or a candidate model was refused; the message names the failed checks."""

    def __init__(self, report: GuardrailReport) -> None:
        failed = report.refusing
        named = "; ".join(check.summary() for check in failed[:_MESSAGE_CHECKS])
        if len(failed) > _MESSAGE_CHECKS:
            named += f"; and {len(failed) - _MESSAGE_CHECKS} more"
        super().__init__(
            f"{report.subject} refused by {len(failed)} of {len(report.checks)} guardrail checks: "
            f"{named}"
        )
        self.report = report


class Status(StrEnum):
    PASSED = "passed"
    #: Out of bounds with the stated confidence (``GuardrailSettings.confidence``): refuses.
    FAILED = "failed"
    #: Out of bounds on its point estimate, but not with the stated confidence (a few clicks
    #: either way): did not pass, is reported and shown, never refuses.
    UNSURE = "unsure"
    #: Not evaluated (no reference to compare with, too little data); never refuses.
    SKIPPED = "skipped"


def format_value(value: Observed) -> str:
    """A value as a report shows it: 4 significant digits, nothing for None."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    observed: Observed
    #: The bound in words, e.g. ">= 1" or "in [0, 86400]".
    bound: str
    detail: str = ""
    #: The observed figure's two-sided interval at the stated confidence, where it is an
    #: estimate from a sample (a rate on the day's clicks); None for exact figures.
    interval: tuple[float, float] | None = None
    #: How sure it is that the true figure is out of bounds (one-sided score test, 0-1):
    #: refused at or above the stated confidence, unsure between 0.5 and it.
    sure: float | None = None

    @property
    def passed(self) -> bool:
        return self.status not in (Status.FAILED, Status.UNSURE)

    def as_dict(self) -> dict[str, Observed]:
        data: dict[str, Observed] = {
            key: value
            for key, value in asdict(self).items()
            if key not in ("interval", "sure") or value is not None
        }
        # NaN is not JSON: an unmeasurable value is written as null.
        if isinstance(self.observed, float) and math.isnan(self.observed):
            data["observed"] = None
        return data

    def uncertainty(self) -> str:
        """The interval and how sure the verdict is, in words ("" for exact figures)."""
        parts = []
        if self.interval is not None:
            low, high = self.interval
            parts.append(f"[{format_value(low)}, {format_value(high)}]")
        if self.sure is not None:
            parts.append(f"out of bounds with {self.sure:.1%} confidence")
        return "; ".join(parts)

    def summary(self) -> str:
        text = f"{self.name} (observed {format_value(self.observed)}, bound {self.bound})"
        return f"{text}: {self.detail}" if self.detail else text


@dataclass(frozen=True)
class GuardrailReport:
    #: What was checked, e.g. "training data 2026-01-12" or "candidate model".
    subject: str
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        """Checks that did not pass: the refusing ones first, then the unsure ones."""
        return sorted(
            (check for check in self.checks if not check.passed),
            key=lambda check: check.status is Status.UNSURE,
        )

    @property
    def refusing(self) -> list[Check]:
        """Checks out of bounds with the stated confidence."""
        return [check for check in self.checks if check.status is Status.FAILED]

    @property
    def refused(self) -> bool:
        """What decides: a check out of bounds with confidence (unsure ones never refuse)."""
        return bool(self.refusing)

    def raise_if_failed(self) -> None:
        """Raise ``GuardrailFailed`` when the report refuses (not for unsure checks alone)."""
        if self.refused:
            raise GuardrailFailed(self)

    def as_dict(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "passed": self.passed,
            "refused": self.refused,
            "failed": [check.name for check in self.failed],
            "checks": [check.as_dict() for check in self.checks],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def to_markdown(self) -> str:
        verdict = "passed" if self.passed else f"**refused** ({len(self.refusing)} failed)"
        if not self.refused and not self.passed:
            verdict = f"passed, {len(self.failed)} unsure (not refused)"
        lines = [
            f"# Guardrails: {self.subject}",
            "",
            f"{verdict}; {len(self.checks)} checks.",
            "",
            "| check | status | observed | bound | detail | interval, confidence |",
            "|---|---|---|---|---|---|",
        ]
        # Failures first: they are what a reader opens the file for.
        order = {Status.FAILED: 0, Status.UNSURE: 1}
        for check in sorted(self.checks, key=lambda c: order.get(c.status, 2)):
            observed = format_value(check.observed)
            cells = (
                check.name, check.status, observed, check.bound, check.detail,
                check.uncertainty(),
            )  # fmt: skip
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines) + "\n"

    def save(self, out_dir: Path, stem: str) -> tuple[Path, Path]:
        """Write ``stem.json`` and ``stem.md`` under ``out_dir``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        as_json, as_md = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
        as_json.write_text(self.to_json())
        as_md.write_text(self.to_markdown())
        return as_json, as_md

    def __rich__(self) -> Table | Text:
        """The failed and skipped checks for the terminal; the saved report has them all."""
        failed, unsure = len(self.refusing), len(self.failed) - len(self.refusing)
        verdict = f"[red]refused[/] ({failed} failed)" if failed else "[green]passed[/]"
        if unsure:
            verdict += f", [yellow]{unsure} unsure[/] (not refused)"
        title = f"{escape(self.subject)}: {len(self.checks)} checks, {verdict}"
        shown = [check for check in self.checks if check.status is not Status.PASSED]
        if not shown:
            return Text.from_markup(title)
        table = Table(
            "check", "status", "observed", "bound", "detail", "interval, confidence", title=title
        )
        for check in shown:
            style = {Status.FAILED: "red", Status.UNSURE: "magenta"}.get(check.status, "yellow")
            table.add_row(
                Text(check.name),
                Text(check.status, style=style),
                Text(format_value(check.observed)),
                Text(check.bound),
                Text(check.detail),
                Text(check.uncertainty()),
            )
        return table
