"""How well the case uncertainty of ``cascade predict`` finds the bad cases, where the answer is known.

Reads one or more prediction folders (each with its ``predictions.csv``; one per cross-validation
fold, each predicted by the model that did not see its cases) and the reference labels, scores each
case's Dice (mean over the annotated classes) and prints:

- the Spearman rank correlation between ``uncertainty`` and Dice (a useful uncertainty is negative);
- the catch of the report's own ``review`` column: the share of the cases with Dice below
  ``--dice_below`` it flags, beside the share of all cases it flags;
- the same for a threshold chosen across folders: for each folder, the ``1 - --flag_share``
  quantile of the other folders' uncertainties (so no case helps choose its own threshold), and the
  quantile over every case (the value to put in the segmenter's ``review_uncertainty``).

With ``--plot`` it draws uncertainty against Dice (PNG). Numbers only; no scan is shown.

    python bench/uncertainty_validation.py --predictions OUT_0 ... OUT_4 --truth GT_DIR \\
        --annotated left_atrium --plot docs/results/uncertainty/la2018_oof.png
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from cascade.evaluation import pair_cases, score_pair


def folder_cases(predictions: Path, truth: Path, annotated: str | None) -> list[dict]:
    """``{"case", "group", "uncertainty", "review", "dice"}`` per case of a prediction folder with a reference."""
    with (predictions / "predictions.csv").open(newline="", encoding="utf-8-sig") as stream:
        report = {row["case"]: row for row in csv.DictReader(stream)}
    pairs, _, _ = pair_cases(predictions, truth, annotated)
    cases = []
    for case, predicted, reference, classes in pairs:
        row = report.get(case)
        if row is None or row["uncertainty"] in ("", "n/a"):
            continue
        scores = [r["dice"] for r in score_pair(case, predicted, reference, classes) if r["status"] != "not_annotated"]
        cases.append({"case": case, "group": predictions.name, "uncertainty": float(row["uncertainty"]),
                      "review": row["review"] == "true", "dice": float(np.mean(scores))})
    return cases


def catch(flagged: np.ndarray, bad: np.ndarray) -> dict:
    """Share of all cases flagged and share of the bad cases flagged."""
    return {"flagged": float(flagged.mean()), "bad_flagged": float(flagged[bad].mean()) if bad.any() else float("nan"),
            "bad": int(bad.sum()), "cases": int(flagged.size)}


def grouped_thresholds(cases: list[dict], flag_share: float) -> np.ndarray:
    """Per case, the ``1 - flag_share`` quantile of the uncertainties of the other groups."""
    groups = np.array([c["group"] for c in cases])
    values = np.array([c["uncertainty"] for c in cases])
    return np.array([np.quantile(values[groups != g], 1 - flag_share) for g in groups])


def plot(cases: list[dict], dice_below: float, threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.array([c["uncertainty"] for c in cases])
    scores = np.array([c["dice"] for c in cases])
    figure, axes = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    flagged = values > threshold
    axes.scatter(values[~flagged], scores[~flagged], s=18, c="tab:blue", label="not flagged")
    axes.scatter(values[flagged], scores[flagged], s=18, c="tab:red", label="flagged for review")
    axes.axhline(dice_below, color="grey", lw=0.8, ls="--")
    axes.axvline(threshold, color="tab:red", lw=0.8, ls=":")
    axes.set_xlabel("case uncertainty U (disputed / labelled volume)")
    axes.set_ylabel("Dice against the manual label")
    axes.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", nargs="+", type=Path, required=True)
    parser.add_argument("--truth", type=Path, required=True, help="reference label folder (or datalist JSON)")
    parser.add_argument("--annotated", default=None, help="classes the references annotate (e.g. left_atrium)")
    parser.add_argument("--dice_below", type=float, default=0.85, help="a case below this Dice is a bad case")
    parser.add_argument("--flag_share", type=float, default=0.2, help="share of cases the chosen threshold flags")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the per-case values and the summary")
    args = parser.parse_args()

    cases = [case for folder in args.predictions for case in folder_cases(folder, args.truth, args.annotated)]
    values = np.array([c["uncertainty"] for c in cases])
    scores = np.array([c["dice"] for c in cases])
    bad = scores < args.dice_below
    rho, p_value = spearmanr(values, scores)
    report = catch(np.array([c["review"] for c in cases]), bad)
    held_out = catch(values > grouped_thresholds(cases, args.flag_share), bad)
    threshold = float(np.quantile(values, 1 - args.flag_share))
    summary = {"cases": len(cases), "dice_mean": float(scores.mean()), "spearman_rho": float(rho),
               "p_value": float(p_value), "review_column": report, "held_out_threshold": held_out,
               "threshold_all_cases": threshold, "dice_below": args.dice_below, "flag_share": args.flag_share}
    print(f"{len(cases)} cases in {len(args.predictions)} folders, Dice {scores.mean():.3f} +- {scores.std():.3f}; "
          f"uncertainty {values.mean():.4f} (min {values.min():.4f}, max {values.max():.4f})")
    print(f"Spearman rho(uncertainty, Dice) = {rho:.3f} (p = {p_value:.2g})")
    for name, result in (("review column", report), (f"held-out {1 - args.flag_share:.0%} quantile", held_out)):
        print(f"{name}: flags {result['flagged']:.0%} of all cases and {result['bad_flagged']:.0%} of the "
              f"{result['bad']} cases with Dice < {args.dice_below}")
    print(f"the {1 - args.flag_share:.0%} quantile over all cases (review_uncertainty): {threshold:.4f}")
    if args.plot:
        plot(cases, args.dice_below, threshold, args.plot)
        print(f"plot: {args.plot}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "cases": cases}, indent=1) + "\n")


if __name__ == "__main__":
    main()
