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
        failed = report.failed
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
    FAILED = "failed"
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

    @property
    def passed(self) -> bool:
        return self.status is not Status.FAILED

    def as_dict(self) -> dict[str, Observed]:
        data: dict[str, Observed] = asdict(self)
        # NaN is not JSON: an unmeasurable value is written as null.
        if isinstance(self.observed, float) and math.isnan(self.observed):
            data["observed"] = None
        return data

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
        return [check for check in self.checks if not check.passed]

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise GuardrailFailed(self)

    def as_dict(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "passed": self.passed,
            "failed": [check.name for check in self.failed],
            "checks": [check.as_dict() for check in self.checks],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def to_markdown(self) -> str:
        verdict = "passed" if self.passed else f"**refused** ({len(self.failed)} failed)"
        lines = [
            f"# Guardrails: {self.subject}",
            "",
            f"{verdict}; {len(self.checks)} checks.",
            "",
            "| check | status | observed | bound | detail |",
            "|---|---|---|---|---|",
        ]
        # Failures first: they are what a reader opens the file for.
        for check in sorted(self.checks, key=lambda c: c.passed):
            observed = format_value(check.observed)
            cells = (check.name, check.status, observed, check.bound, check.detail)
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
        failed = len(self.failed)
        verdict = f"[red]refused[/] ({failed} failed)" if failed else "[green]passed[/]"
        title = f"{escape(self.subject)}: {len(self.checks)} checks, {verdict}"
        shown = [check for check in self.checks if check.status is not Status.PASSED]
        if not shown:
            return Text.from_markup(title)
        table = Table("check", "status", "observed", "bound", "detail", title=title)
        for check in shown:
            style = "red" if check.status is Status.FAILED else "yellow"
            table.add_row(
                Text(check.name),
                Text(check.status, style=style),
                Text(format_value(check.observed)),
                Text(check.bound),
                Text(check.detail),
            )
        return table
