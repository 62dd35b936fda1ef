"""``slidr decisions``: read the decisions topic back and summarise it per slice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.table import Table

from slidr.billing import read_ledger
from slidr.console import make_console
from slidr.events import IvtCategory
from slidr.settings import get_settings

console = make_console()


def _truth(path: Path | None) -> dict[str, bool]:
    """The ground truth in ``path``: a simulation's directory or its truth/ folder."""
    if path is None:
        return {}
    from slidr.archive import TRUTH, read_dataset  # pyarrow only when used

    root = path if (path / TRUTH).is_dir() else path.parent
    table = read_dataset(root, TRUTH, columns=["click_id", "is_bot"])
    return dict(zip(table["click_id"].to_pylist(), table["is_bot"].to_pylist(), strict=True))


def decisions(
    truth: Annotated[
        Path | None,
        typer.Option(
            help="Simulator ground truth (--truth-out's directory or its truth/ Parquet dir) to "
            "add bot recall, precision and the human false-positive rate.",
            envvar="SLIDR_DECISIONS_TRUTH",
        ),
    ] = None,
    idle_s: Annotated[
        float, typer.Option(help="Stop reading after this long without a message, seconds.")
    ] = 3.0,
) -> None:
    """Summarise the decisions topic per slice: clicks, GIVT (invalid by a list, before the
    model), the model's invalidation rate (IVR, on the clicks it judged) and degraded."""
    settings = get_settings()
    ledger = read_ledger(settings, idle_s=idle_s)
    if not len(ledger):
        console.print(f"no decisions on {settings.topics.decisions} yet")
        raise typer.Exit(1)
    # Billing's view: the final decision of each click (replays included).
    latest = {d.click_id: d.model_dump(mode="json") for d in ledger.final()}
    labels = _truth(truth)
    totals: Counter[str] = Counter()
    invalid: Counter[str] = Counter()
    degraded: Counter[str] = Counter()
    givt: Counter[str] = Counter()
    givt_reasons: Counter[str] = Counter()
    versions: Counter[int] = Counter()
    for r in latest.values():
        s = str(r["slice"])
        totals[s] += 1
        if r.get("ivt_category") == IvtCategory.GIVT:
            givt[s] += 1
            givt_reasons[str(cast(list[str], r["reason_codes"])[0])] += 1
            continue
        invalid[s] += r["verdict"] == "invalid"
        degraded[s] += bool(r["degraded"])
        versions[int(str(r["model_version"]))] += 1

    def ivr(k: int, n: int) -> str:
        return f"{k / n:.1%}" if n else "-"

    table = Table("slice", "clicks", "GIVT", "model IVR", "degraded")
    for s in sorted(totals):
        table.add_row(
            s, f"{totals[s]:,}", f"{givt[s]:,}", ivr(invalid[s], totals[s] - givt[s]),
            f"{degraded[s]:,}",
        )  # fmt: skip
    n, g, k = sum(totals.values()), sum(givt.values()), sum(invalid.values())
    table.add_row("[bold]all[/]", f"{n:,}", f"{g:,}", ivr(k, n - g), f"{sum(degraded.values()):,}")
    console.print(table)
    if givt_reasons:
        console.print(
            f"GIVT (decided by lists before the model): {g / n:.1%} of clicks; "
            + ", ".join(f"{reason}: {c:,}" for reason, c in sorted(givt_reasons.items()))
        )
    console.print(
        f"{ledger.decisions:,} messages, {len(latest):,} distinct clicks; model versions: "
        + ", ".join(f"v{v}: {c:,}" for v, c in sorted(versions.items()))
    )
    if labels:
        budget = settings.calibration.fpr_budget
        # Per day of the clicks: a threshold chosen on one day is judged on the days after it.
        known = [
            (str(r["event_time"])[:10], labels[c], r["verdict"] == "invalid")
            for c, r in latest.items()
            if c in labels
        ]
        bots = sum(b for _, b, _ in known)
        caught = sum(b and f for _, b, f in known)
        false_pos = sum((not b) and f for _, b, f in known)
        console.print(
            f"ground truth on {len(known):,} clicks: bot recall {caught / max(bots, 1):.1%}, "
            f"precision {caught / max(caught + false_pos, 1):.1%}, "
            f"human false-positive rate {_against(false_pos, len(known) - bots, budget)}"
        )
        humans: Counter[str] = Counter(day for day, b, _ in known if not b)
        harmed: Counter[str] = Counter(day for day, b, f in known if f and not b)
        console.print(
            "human false-positive rate by day: "
            + ", ".join(
                f"{day} {_against(harmed[day], n, budget)}" for day, n in sorted(humans.items())
            )
        )


def _against(false_pos: int, humans: int, budget: float) -> str:
    """A true human FPR beside the FPR budget (``SLIDR_CALIBRATION__FPR_BUDGET``)."""
    rate = false_pos / max(humans, 1)
    return f"{rate:.2%} ({rate / budget:.2f}x the {budget:.2%} budget)"
