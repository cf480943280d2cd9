"""Volume agreement of predicted and ground-truth label maps, for ``cascade evaluate``.

Per case and class: both volumes in ml, the difference (prediction minus truth) in ml and in percent
of the truth. Per class over the cases, the Bland-Altman statistics (J. M. Bland and D. G. Altman,
"Statistical methods for assessing agreement between two methods of clinical measurement", Lancet
1986): the bias (mean difference) and the 95% limits of agreement, bias -/+ 1.96 standard deviations
(sample SD, n - 1) of the differences, and the mean absolute difference (what "the volume is off by
x% on average" means), in ml and in percent. A class a case does not annotate is left
out; limits need two cases. Outputs in the evaluation folder:

- ``volumes.csv``: :data:`VOLUME_COLUMNS`, one row per case and annotated class; the percentage is
  empty where the true volume is 0;
- ``summary.json`` under ``volume_agreement``: per class ``n``, ``bias_ml``, ``sd_ml``,
  ``lower_ml``, ``upper_ml``, ``mae_ml``, and the same in percent (``None`` where undefined);
- ``bland_altman.png``: per class, the difference against the mean of the two volumes, with the
  bias and limits drawn (needs matplotlib, the optional extra ``atria-cascade[measure]``; without
  it a note says the picture was not drawn).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import math
from pathlib import Path

import numpy as np

from cascade.io import write_atomic, write_text_atomic
from cascade.labels import CLASS_COLOURS, CLASS_NAMES

__all__ = [
    "VOLUME_COLUMNS",
    "volume_rows",
    "bland_altman",
    "format_volume_table",
    "save_bland_altman_png",
    "write_volume_agreement",
]

VOLUME_COLUMNS = ("case", "class", "prediction_ml", "truth_ml", "difference_ml", "difference_pct")
LIMIT_FACTOR = 1.96  # 95% of normally distributed differences


def volume_rows(metric_rows: list[dict]) -> list[dict]:
    """One :data:`VOLUME_COLUMNS` row per scored case and class, from rows carrying ``prediction_ml`` and
    ``truth_ml`` (``cascade.evaluation.score_pair``); ``not_annotated`` rows are left out."""
    rows = []
    for row in metric_rows:
        if row["status"] == "not_annotated":
            continue
        difference = row["prediction_ml"] - row["truth_ml"]
        percent = 100.0 * difference / row["truth_ml"] if row["truth_ml"] > 0 else float("nan")
        rows.append(
            {
                "case": row["case"],
                "class": row["class"],
                "prediction_ml": row["prediction_ml"],
                "truth_ml": row["truth_ml"],
                "difference_ml": difference,
                "difference_pct": percent,
            }
        )
    return rows


def _limits(differences: list[float], unit: str) -> dict:
    values = np.array([d for d in differences if not math.isnan(d)], np.float64)
    stats = {
        f"bias_{unit}": None, f"sd_{unit}": None, f"lower_{unit}": None, f"upper_{unit}": None, f"mae_{unit}": None
    }
    if values.size:
        stats[f"bias_{unit}"] = float(values.mean())
        stats[f"mae_{unit}"] = float(np.abs(values).mean())
    if values.size > 1:
        sd = float(values.std(ddof=1))
        stats.update(
            {
                f"sd_{unit}": sd,
                f"lower_{unit}": float(values.mean() - LIMIT_FACTOR * sd),
                f"upper_{unit}": float(values.mean() + LIMIT_FACTOR * sd),
            }
        )
    return stats


def bland_altman(rows: list[dict]) -> dict:
    """Per class: ``n`` and the bias, SD and 95% limits of agreement in ml and percent (module docstring)."""
    stats = {}
    for name in CLASS_NAMES.values():
        chosen = [row for row in rows if row["class"] == name]
        stats[name] = {
            "n": len(chosen),
            **_limits([r["difference_ml"] for r in chosen], "ml"),
            **_limits([r["difference_pct"] for r in chosen], "pct"),
        }
    return stats


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_volume_table(stats: dict) -> str:
    """Bias, 95% limits of agreement and mean absolute difference per scored class, in ml and percent."""
    lines = [
        f"{'volume agreement':<18}{'n':>4}{'bias ml':>10}{'95% limits ml':>22}{'bias %':>9}{'95% limits %':>20}"
        f"{'mean |diff| %':>15}"
    ]
    for name, entry in stats.items():
        if not entry["n"]:
            continue
        limits_ml = f"{_number(entry['lower_ml'], '.2f')} .. {_number(entry['upper_ml'], '.2f')}"
        limits_pct = f"{_number(entry['lower_pct'], '.1f')} .. {_number(entry['upper_pct'], '.1f')}"
        lines.append(
            f"{name:<18}{entry['n']:>4}{_number(entry['bias_ml'], '.2f'):>10}{limits_ml:>22}"
            f"{_number(entry['bias_pct'], '.1f'):>9}{limits_pct:>20}{_number(entry['mae_pct'], '.1f'):>15}"
        )
    return "\n".join(lines)


def save_bland_altman_png(rows: list[dict], stats: dict, path: str | Path) -> Path:
    """Bland-Altman plot per class: the difference (prediction - truth, ml) against the mean volume, bias and limits."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = [name for name in CLASS_NAMES.values() if stats[name]["n"]]
    figure = Figure(figsize=(5 * max(len(names), 1), 4.5), dpi=100)
    figure.suptitle("Bland-Altman: predicted - true volume", fontsize=12)
    for index, name in enumerate(names):
        axes = figure.add_subplot(1, len(names), index + 1)
        chosen = [row for row in rows if row["class"] == name]
        means = [(r["prediction_ml"] + r["truth_ml"]) / 2 for r in chosen]
        value = {v: k for k, v in CLASS_NAMES.items()}[name]
        axes.scatter(
            means,
            [r["difference_ml"] for r in chosen],
            color=np.asarray(CLASS_COLOURS[value]) / 255,
            edgecolors="black",
        )
        entry = stats[name]
        for key, style, label in (
            ("bias_ml", "-", "bias"),
            ("lower_ml", "--", "-1.96 SD"),
            ("upper_ml", "--", "+1.96 SD"),
        ):
            if entry[key] is not None:
                axes.axhline(entry[key], color="black", linestyle=style, linewidth=1)
                axes.annotate(
                    f"{label} {entry[key]:.2f}",
                    xy=(1.0, entry[key]),
                    xycoords=("axes fraction", "data"),
                    ha="right",
                    va="bottom",
                    fontsize=8,
                )
        axes.axhline(0.0, color="grey", linewidth=0.5)
        axes.set_title(f"{name} (n = {entry['n']})", fontsize=10)
        axes.set_xlabel("mean of the two volumes (ml)")
        axes.set_ylabel("difference (ml)")
    figure.tight_layout()
    return write_atomic(path, lambda tmp: figure.savefig(tmp, format="png"))


def write_volume_agreement(metric_rows: list[dict], out_dir: Path) -> dict:
    """Write ``volumes.csv`` and ``bland_altman.png`` into ``out_dir``; return the Bland-Altman statistics."""
    rows = volume_rows(metric_rows)
    stats = bland_altman(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=VOLUME_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                key: ""
                if isinstance(value, float) and math.isnan(value)
                else f"{value:.4f}"
                if isinstance(value, float)
                else value
                for key, value in row.items()
            }
        )
    write_text_atomic(out_dir / "volumes.csv", buffer.getvalue())
    if importlib.util.find_spec("matplotlib") is None:
        print("[evaluate] bland_altman.png not drawn: it needs matplotlib (pip install 'atria-cascade[measure]')")
    elif rows:
        save_bland_altman_png(rows, stats, out_dir / "bland_altman.png")
    return stats
