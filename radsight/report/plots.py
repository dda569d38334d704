"""Evaluation figures: each function draws one PNG at ``path`` and returns the path.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so importing this module never changes
the backend of an interactive session and works without a display. A figure is ``size`` inches at
``dpi``, so the PNG is exactly ``size * dpi`` pixels (no tight bounding box).

Labels without both classes in the test set have no ROC or PR curve: they are skipped and listed in the
legend as undefined, so that a 14-label figure still shows the other 13. A figure the data cannot give
at all (no label defined, no annotated label to calibrate, no curve point) raises :class:`Undrawable`,
whose message is the one-line reason; a caller skips that figure and keeps everything else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from numpy.typing import ArrayLike

from radsight.atomic import atomic_write

DPI = 100
SIZE = (6.4, 5.6)
UNDEFINED = "undefined: one class in test set"


class Undrawable(ValueError):
    """The data holds nothing this figure can show; the message says why, in one line."""


def _figure(size: tuple[float, float]) -> tuple[Figure, Axes]:
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=DPI))
    return path


def _curves(curves: Mapping, kind: str) -> tuple[dict, list[str]]:
    """The defined curves of ``kind`` ("roc" or "pr") and the names of undefined labels."""
    entries = curves[kind]
    defined = {name: c for name, c in entries.items() if c.get("defined")}
    if not defined:
        raise Undrawable(
            f"no label has both classes in the test set: there is no {kind.upper()} curve to draw"
        )
    return defined, [name for name, c in entries.items() if not c.get("defined")]


def _note_undefined(ax: Axes, names: list[str]) -> None:
    for name in names:
        ax.plot([], [], " ", label=f"{name}: {UNDEFINED}")


def roc_curves(
    curves: Mapping, path: str | Path, *, title: str = "ROC curves", size: tuple[float, float] = SIZE
) -> Path:
    """ROC curve per label with its 95% patient-bootstrap band (``classification_curves`` output)."""
    defined, undefined = _curves(curves, "roc")
    figure, ax = _figure(size)
    for name, c in defined.items():
        (line,) = ax.plot(c["fpr"], c["tpr"], lw=1.5, label=f"{name} (AUROC {c['auroc']:.3f})")
        if np.isfinite(c["tpr_ci_low"]).any():
            ax.fill_between(
                c["fpr_grid"],
                c["tpr_ci_low"],
                c["tpr_ci_high"],
                step="post",
                color=line.get_color(),
                alpha=0.15,
            )
    _note_undefined(ax, undefined)
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    ax.set(
        xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", title=title
    )
    ax.legend(loc="lower right", fontsize="x-small")
    return _save(figure, path)


def pr_curves(
    curves: Mapping,
    path: str | Path,
    *,
    title: str = "Precision-recall curves",
    size: tuple[float, float] = SIZE,
) -> Path:
    """Precision-recall curve per label (the step function average precision integrates) with a 95%
    patient-bootstrap band of the interpolated precision."""
    defined, undefined = _curves(curves, "pr")
    figure, ax = _figure(size)
    for name, c in defined.items():
        label = f"{name} (AP {c['auprc']:.3f}, prevalence {c['prevalence']:.2f})"
        (line,) = ax.plot(c["recall"], c["precision"], lw=1.5, drawstyle="steps-pre", label=label)
        if np.isfinite(c["precision_ci_low"]).any():
            ax.fill_between(
                c["recall_grid"],
                c["precision_ci_low"],
                c["precision_ci_high"],
                color=line.get_color(),
                alpha=0.15,
            )
    _note_undefined(ax, undefined)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (sensitivity)", ylabel="precision (PPV)", title=title)
    ax.legend(loc="lower left", fontsize="x-small")
    return _save(figure, path)


def calibration_curve(
    reliability: Mapping,
    path: str | Path,
    *,
    title: str = "Reliability diagram",
    size: tuple[float, float] = SIZE,
) -> Path:
    """Observed frequency per confidence bin against the diagonal (``reliability_diagram`` output)."""
    lower, upper = np.asarray(reliability["bin_lower"]), np.asarray(reliability["bin_upper"])
    observed, confidence = np.asarray(reliability["observed"]), np.asarray(reliability["confidence"])
    filled = np.asarray(reliability["count"]) > 0
    if not filled.any():
        raise Undrawable("no image has an annotated label")
    figure, ax = _figure(size)
    ax.bar(
        lower[filled],
        observed[filled],
        width=(upper - lower)[filled],
        align="edge",
        alpha=0.6,
        label="observed",
    )
    ax.plot(confidence[filled], observed[filled], "o", ms=4, color="black", label="bin mean confidence")
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability", ylabel="observed frequency")
    ax.set_title(f"{title} (ECE {reliability['ece']:.3f}, {lower.size} equal-width bins)")
    ax.legend(loc="upper left", fontsize="small")
    return _save(figure, path)


def confusion_heatmap(
    matrix: ArrayLike,
    class_names: Sequence[str],
    path: str | Path,
    *,
    title: str = "Confusion matrix",
    size: tuple[float, float] = SIZE,
) -> Path:
    """Single-label confusion matrix, coloured by the share of each true class, annotated with counts."""
    counts = np.asarray(matrix)
    if counts.shape != (len(class_names), len(class_names)):
        raise ValueError(f"a {counts.shape} matrix for {len(class_names)} class names")
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    figure, ax = _figure(size)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, col), count in np.ndenumerate(counts):
        colour = "white" if shares[row, col] > 0.5 else "black"
        ax.text(
            col, row, f"{count}\n{shares[row, col]:.0%}", ha="center", va="center", color=colour, fontsize=8
        )
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    figure.colorbar(image, ax=ax, label="share of true class")
    return _save(figure, path)


def label_efficiency_curves(
    results: Mapping[str, Sequence[Mapping[str, float | None]]],
    path: str | Path,
    *,
    metric: str = "AUROC (macro)",
    xlabel: str = "labelled images per class",
    title: str = "Label efficiency",
    size: tuple[float, float] = SIZE,
) -> Path:
    """Metric against the label budget (log x), one line per recipe with its CI band where given.

    ``results`` maps a recipe name to points ``{"labels_per_class", "value", "ci_low", "ci_high"}`` (CIs
    optional, None for undefined).
    """
    if not any(results.values()):
        raise Undrawable("no recipe has a finished label budget to draw")
    figure, ax = _figure(size)
    for recipe, points in results.items():
        rows = sorted(points, key=lambda p: p["labels_per_class"])
        x = np.array([p["labels_per_class"] for p in rows], dtype=np.float64)
        if np.any(x <= 0):
            raise ValueError(f"{recipe}: label budgets must be positive for a log axis")

        def column(key: str, rows: list = rows) -> np.ndarray:
            return np.array([np.nan if p.get(key) is None else p[key] for p in rows], dtype=np.float64)

        (line,) = ax.plot(x, column("value"), marker="o", label=recipe)
        low, high = column("ci_low"), column("ci_high")
        if np.isfinite(low).any():
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15)
    plain_log_x(ax)
    ax.set(xlabel=xlabel, ylabel=metric, title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(figure, path)


def plain_log_x(ax: Axes) -> None:
    """A log x axis labelled in plain numbers at 1, 2 and 5 of each decade (10, 20, 50, 100...):
    matplotlib's default labels the minor ticks of a short range in powers of ten, which run into each
    other."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(
        FuncFormatter(lambda value, _: f"{value:g}" if _leading_digit(value) in (2, 5) else "")
    )


def _leading_digit(value: float) -> int:
    return int(f"{value:e}"[0])
