"""Learned representations (issue 14 item 3): the network with embeddings of the categorical ids,
with a deep-and-cross block on top, and without the ids, beside the baselines, over seeds.

For each simulation seed, as ``bench_models.py`` does: simulate ``--days`` days, compute
features through the live Redis code (needs a Redis: `slidr stack up`, or SLIDR_REDIS__PORT),
then run what `slidr train` runs (``prepare``, ``fit_and_export`` without the export), with the
variants as more scorers on the same held-out day, fitted on the same rows and weights:

- ``network``: the settings' network (embeddings of every categorical id, no cross layers);
- ``network_dcn``: the same with ``--cross-layers`` DCN-v2 cross layers;
- ``network_no_ids``: no embeddings (the numeric features only);
- ``logistic_regression`` / ``boosted_trees``: with the ids (one-hot / categories);
  ``*_no_ids``: without them.

    .venv/bin/python benchmarks/bench_embeddings.py --seeds 121 131

``--archive DIR`` runs the same on an archive instead (e.g. one `slidr import talkingdata`
wrote; seed 0 in the table).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import baselines
from models.evaluate import Evaluation
from models.network import predict, train_network
from models.train import fit_and_export, prepare, weighted_split
from slidr.settings import get_settings
from slidr.simulate.config import SimConfig
from slidr.simulate.runner import run
from slidr.simulate.sinks import ParquetSink
from tests.simulated import START

FPR_POINTS = (0.01, 0.02)


def _measure(seed: int, days: int, clicks_per_day: int, cross_layers: int) -> Evaluation:
    with tempfile.TemporaryDirectory(prefix="slidr-bench-embeddings-") as tmp:
        root = Path(tmp)
        config = SimConfig(start=START, days=days, clicks_per_day=clicks_per_day, seed=seed)
        run(config, [ParquetSink(root)])
        return _compare(root, cross_layers, root / "report")


def _compare(root: Path, cross_layers: int, report_dir: Path) -> Evaluation:
    settings = get_settings()
    learn = settings.learn
    prepared = prepare(root, settings, say=lambda _: None)
    fit, _ = weighted_split(prepared.rows(prepared.plan.fit), learn.weight_cap)
    stop, _ = weighted_split(prepared.rows(prepared.plan.stop), learn.weight_cap)
    dcn = train_network(fit, stop, learn.model_copy(update={"cross_layers": cross_layers}))
    plain = train_network(fit, stop, learn.model_copy(update={"embeddings": False}))
    print(
        f"dcn {dcn.seconds:.0f} s ({dcn.best_epoch}/{dcn.epochs} epochs), "
        f"no ids {plain.seconds:.0f} s ({plain.best_epoch}/{plain.epochs})",
        flush=True,
    )
    compare = {
        "network_dcn": lambda x: predict(dcn.module, x),
        "network_no_ids": lambda x: predict(plain.module, x),
        "logistic_regression_no_ids": baselines.logistic_regression(
            fit, learn.seed, categorical=()
        ),
        "boosted_trees_no_ids": baselines.boosted_trees(fit, learn.seed, categorical=()),
    }
    outcome = fit_and_export(
        prepared, settings, report_dir, export=False, say=print, compare=compare
    )
    return outcome.evaluation


def _row(seed: int, name: str, evaluation: Evaluation) -> dict[str, Any]:
    m = evaluation.models[name]
    row: dict[str, Any] = {
        "seed": seed,
        "model": name,
        "auc_purchased": m.auc_purchased,
        "auc_bot": m.auc_bot,
    }
    for fpr in FPR_POINTS:
        point = m.at(fpr).overall
        row[f"fpr@{fpr:g}"] = point.rates.fpr
        row[f"ivr@{fpr:g}"] = point.rates.ivr
        row[f"coverage@{fpr:g}"] = point.rates.coverage
        row[f"bot_recall@{fpr:g}"] = point.truth.bot_recall if point.truth else None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[121, 131])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--clicks-per-day", type=int, default=100_000)
    parser.add_argument("--cross-layers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--archive", type=Path, help="an archive instead of simulated seeds")
    parser.add_argument("--report-dir", type=Path, help="with --archive: report.json here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows: list[dict[str, Any]] = []
    for seed in [0] if args.archive else args.seeds:
        if args.archive:
            report = args.report_dir or args.archive / "report-embeddings"
            evaluation = _compare(args.archive, args.cross_layers, report)
        else:
            evaluation = _measure(seed, args.days, args.clicks_per_day, args.cross_layers)
        for name in evaluation.models:
            rows.append(_row(seed, name, evaluation))
            r = rows[-1]
            print(
                f"| {seed} | {name} | {r['auc_purchased']:.3f} | {r['auc_bot'] or float('nan'):.3f}"
                + "".join(
                    f" | {r[f'ivr@{f:g}']:.1%} ({r[f'fpr@{f:g}']:.2%}) | {r[f'coverage@{f:g}']:.1%}"
                    for f in FPR_POINTS
                )
                + " |",
                flush=True,
            )
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
