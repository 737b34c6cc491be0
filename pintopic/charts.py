"""One chart style for every figure pintopic draws: the dataset stage's category distribution and the report's.

matplotlib without pyplot (safe in threads and servers), Okabe & Ito's colour-blind-safe palette, axes
sized by the number of categories so 32+ names stay legible, PNG bytes without a timestamp (the same data
gives the same bytes).
"""
from __future__ import annotations

import io
from collections.abc import Collection, Mapping

#: Okabe & Ito's colour-blind-safe qualitative palette (blue, orange, bluish green, vermillion, ...).
OKABE_ITO: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000000",
)
#: Neutral grey for bars set apart (plus hatching, not colour alone).
SET_APART_COLOR = "#999999"

#: Vertical space per category label, in inches, at :data:`FONT_SIZE` (leaves a gap between labels).
INCHES_PER_CATEGORY = 0.24
FONT_SIZE = 9
DPI = 110


def category_axis_inches(n_categories: int, minimum: float = 2.5) -> float:
    """Length of an axis that lists ``n_categories`` names one per tick without overlap."""
    return max(minimum, INCHES_PER_CATEGORY * n_categories)


def new_figure(width: float, height: float):
    """A pyplot-free matplotlib Figure (safe in threads and servers) whose layout keeps labels inside it."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def to_png(figure) -> bytes:
    """Render a Figure to PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return buffer.getvalue()


def horizontal_bars(
    values: Mapping[str, float], *, xlabel: str, title: str, labels: Mapping[str, str] | None = None,
    sort: bool = True, value_format: str = "{:g}", color: str = OKABE_ITO[0], reference: float | None = None,
    reference_label: str | None = None, xlim: tuple[float, float] | None = None,
    set_apart: Collection[str] = (), set_apart_label: str | None = None, kept_label: str | None = None,
):
    """One horizontal bar per category (largest on top), value printed at the bar end; names stay legible.

    ``labels`` maps a key to the text shown on the axis; ``reference`` draws a dashed vertical line
    (e.g. chance level); keys in ``set_apart`` (e.g. categories left out of a sample) are drawn hatched
    in grey, not by colour alone, with a legend naming both kinds of bar.
    """
    keys = list(values)
    if sort:
        keys.sort(key=lambda key: (-float(values[key]), key))
    label_text = [(labels or {}).get(key, key) for key in keys]
    longest = max((len(text) for text in label_text), default=8)
    width = 3.6 + 0.07 * longest
    height = category_axis_inches(len(keys)) + 0.9
    figure = new_figure(width, height)
    axes = figure.add_subplot()
    positions = range(len(keys))
    numbers = [float(values[key]) for key in keys]
    apart = set(set_apart)
    bars = axes.barh(positions, numbers, color=[SET_APART_COLOR if key in apart else color for key in keys], height=0.7)
    for bar, key in zip(bars, keys):
        if key in apart:
            bar.set_hatch("//")
            bar.set_edgecolor("#444444")
    axes.set_yticks(list(positions), label_text, fontsize=FONT_SIZE, parse_math=False)  # names are text, not TeX
    if keys:
        axes.set_ylim(len(keys) - 0.5, -0.5)  # largest on top
    top = max(numbers, default=1.0) or 1.0
    for position, number in zip(positions, numbers):
        axes.text(number + top * 0.01, position, value_format.format(number), va="center", fontsize=FONT_SIZE - 1)
    if reference is not None:
        axes.axvline(reference, color=OKABE_ITO[3], linestyle="--", linewidth=1.2, label=reference_label)
        if reference_label:
            axes.legend(loc="lower right", fontsize=FONT_SIZE, frameon=False)
    if apart & set(keys) and set_apart_label:
        from matplotlib.patches import Patch

        axes.legend(handles=[Patch(facecolor=color, label=kept_label or "kept"),
                             Patch(facecolor=SET_APART_COLOR, hatch="//", edgecolor="#444444", label=set_apart_label)],
                    loc="lower right", fontsize=FONT_SIZE, frameon=False)
    axes.set_xlim(*(xlim or (0, top * 1.15)))
    if not keys:
        axes.text(0.5, 0.5, "nothing to show", ha="center", va="center", transform=axes.transAxes, fontsize=FONT_SIZE + 2)
    axes.set_xlabel(xlabel, fontsize=FONT_SIZE + 1)
    axes.set_ylabel("category", fontsize=FONT_SIZE + 1)
    axes.set_title(title, fontsize=FONT_SIZE + 2, loc="left")
    axes.tick_params(axis="x", labelsize=FONT_SIZE)
    axes.spines[["top", "right"]].set_visible(False)
    axes.grid(axis="x", color="#dddddd", linewidth=0.6)
    axes.set_axisbelow(True)
    return figure
