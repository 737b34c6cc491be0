"""Report figures: matplotlib (Agg, no pyplot state) charts sized by category count, returned as PNG bytes.

The style (palette, sizes, :func:`~pintopic.charts.horizontal_bars`) comes from :mod:`pintopic.charts`, which
the dataset stage's distribution chart uses too, so every figure of a run looks alike and stays legible
with 32 categories.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pintopic.charts import (
    FONT_SIZE,
    OKABE_ITO,
    category_axis_inches,
    horizontal_bars,
    new_figure,
    to_png,  # noqa: F401 - re-exported for the report builder
)

#: Sequential colour map for scores and counts: perceptually uniform and colour-blind safe.
SEQUENTIAL_CMAP = "cividis"
#: Colour map for the confusion matrix (many cells near zero, a bright diagonal).
CONFUSION_CMAP = "viridis"


def per_category_f1_figure(per_category: Mapping[str, Mapping[str, float]], *, title: str, chance: float | None = None,
                           labels: Mapping[str, str] | None = None):
    """Per-category test F1 of one model, sorted, with the chance level marked."""
    f1 = {category: float(scores.get("f1", 0.0)) for category, scores in per_category.items()}
    return horizontal_bars(
        f1, xlabel="test F1", title=title, labels=labels, value_format="{:.2f}", color=OKABE_ITO[2],
        reference=chance, reference_label="chance" if chance is not None else None, xlim=(0, 1.08),
    )


def confusion_figure(matrix, categories: Sequence[str], *, title: str, labels: Mapping[str, str] | None = None):
    """Row-normalised confusion matrix (rows true, columns predicted) with every category named."""
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    row_totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, row_totals, out=np.zeros_like(counts), where=row_totals > 0)
    names = [(labels or {}).get(category, category) for category in categories]
    n = len(categories)
    longest = max((len(name) for name in names), default=8)
    side = category_axis_inches(n, minimum=3.0)
    margin = 0.075 * longest + 0.6
    figure = new_figure(side + margin + 1.3, side + margin + 0.6)
    axes = figure.add_subplot()
    # with 32 categories and weak models every share is small; a 0-1 scale would paint the matrix black
    top = max(0.1, math.ceil(float(share.max(initial=0.0)) * 10) / 10)
    image = axes.imshow(share, cmap=CONFUSION_CMAP, vmin=0.0, vmax=top, aspect="equal", interpolation="nearest")
    axes.set_xticks(range(n), names, rotation=90, fontsize=FONT_SIZE, parse_math=False)  # names are text, not TeX
    axes.set_yticks(range(n), names, fontsize=FONT_SIZE, parse_math=False)
    axes.set_xlabel("predicted category", fontsize=FONT_SIZE + 1)
    axes.set_ylabel("true category", fontsize=FONT_SIZE + 1)
    axes.set_title(title, fontsize=FONT_SIZE + 2, loc="left")
    if n <= 12:
        for row in range(n):
            for column in range(n):
                if counts[row, column]:
                    dark = share[row, column] < 0.6 * top
                    axes.text(column, row, f"{int(counts[row, column])}", ha="center", va="center",
                              fontsize=FONT_SIZE - 1, color="white" if dark else "black")
    colorbar = figure.colorbar(image, ax=axes, shrink=0.6, pad=0.02)
    colorbar.set_label("share of the true category's test images", fontsize=FONT_SIZE)
    colorbar.ax.tick_params(labelsize=FONT_SIZE - 1)
    return figure


def score_colors(value: float, low: float, high: float) -> tuple[str, str]:
    """Background (cividis) and readable text colour for a score in a colour-scaled table cell."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    span = (high - low) or 1.0
    red, green, blue, _ = colormaps[SEQUENTIAL_CMAP](min(1.0, max(0.0, (value - low) / span)))
    luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
    return to_hex((red, green, blue)), ("#000000" if luminance > 0.45 else "#ffffff")


def profile_figure(shares: Mapping[str, float], low: Mapping[str, float], high: Mapping[str, float], *, title: str,
                   labels: Mapping[str, str] | None = None, truth: Mapping[str, float] | None = None):
    """A user's interest profile: one bar per category (largest on top) with its 95 % interval, and the
    true share as a tick when known."""
    keys = sorted(shares, key=lambda key: (-float(shares[key]), key))
    names = [(labels or {}).get(key, key) for key in keys]
    figure = new_figure(3.8 + 0.07 * max((len(n) for n in names), default=8), category_axis_inches(len(keys)) + 0.9)
    axes = figure.add_subplot()
    values = [float(shares[key]) for key in keys]
    errors = [[v - float(low[k]) for k, v in zip(keys, values)], [float(high[k]) - v for k, v in zip(keys, values)]]
    axes.barh(range(len(keys)), values, xerr=errors, color=OKABE_ITO[0], height=0.7, ecolor="#444444", capsize=2)
    if truth:
        axes.scatter([float(truth.get(k, 0.0)) for k in keys], range(len(keys)), marker="|", s=160, color=OKABE_ITO[3],
                     label="true share", zorder=3)
        axes.legend(loc="lower right", fontsize=FONT_SIZE, frameon=False)
    axes.set_yticks(list(range(len(keys))), names, fontsize=FONT_SIZE)
    axes.set_ylim(len(keys) - 0.5, -0.5)
    axes.set_xlim(0, min(1.0, max(float(high[k]) for k in keys) * 1.1 + 0.02))
    axes.set_xlabel("share of the user's pins (95 % interval)", fontsize=FONT_SIZE + 1)
    axes.set_title(title, fontsize=FONT_SIZE + 2, loc="left")
    axes.spines[["top", "right"]].set_visible(False)
    axes.grid(axis="x", color="#dddddd", linewidth=0.6)
    axes.set_axisbelow(True)
    return figure


def board_curve_figure(curves: Mapping[str, Sequence[Mapping[str, float]]], *, title: str, goal: float | None = None):
    """Board accuracy against the number of pins a board is seen through, one line per setting."""
    figure = new_figure(5.2, 3.2)
    axes = figure.add_subplot()
    for index, (label, curve) in enumerate(curves.items()):
        points = [(p["pins"], p["accuracy"]) for p in curve if p.get("accuracy") is not None]
        axes.plot([x for x, _ in points], [y for _, y in points], marker="o", color=OKABE_ITO[index % len(OKABE_ITO)],
                  label=label)
    if goal is not None:
        axes.axhline(goal, color=OKABE_ITO[3], linestyle="--", linewidth=1, label=f"goal {goal}")
    axes.set_xscale("log")
    axes.set_xlabel("pins per board (random subsets)", fontsize=FONT_SIZE + 1)
    axes.set_ylabel("board category = true category", fontsize=FONT_SIZE + 1)
    axes.set_ylim(0, 1.02)
    axes.set_title(title, fontsize=FONT_SIZE + 2, loc="left")
    axes.legend(fontsize=FONT_SIZE, frameon=False, loc="lower right")
    axes.grid(color="#dddddd", linewidth=0.6)
    return figure
