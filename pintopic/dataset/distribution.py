"""The category distribution (the study's Figure 3.3): ``distribution.csv`` and ``distribution.png``.

One horizontal bar per category, sorted largest first, so 32+ category names stay legible; categories
left out of the sample (fewer ``ok`` images than ``--min-per-category``) are drawn hatched in grey.
Colours are from Okabe & Ito's colour-blind-safe palette. The PNG is rendered without pyplot and
without a timestamp, so the same counts give the same bytes.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping

#: Okabe-Ito blue for kept categories, a neutral grey (plus hatching, not colour alone) for left-out ones.
KEPT_COLOR = "#0072B2"
LEFT_OUT_COLOR = "#999999"
INCHES_PER_CATEGORY = 0.26
FONT_SIZE = 9
DPI = 110

CSV_COLUMNS = ("category", "count", "found", "sampled")


def distribution_csv(rows: Iterable[Mapping]) -> bytes:
    """CSV text with ``category,count,found,sampled`` (``count``: ok images), largest count first."""
    rows = sorted(rows, key=lambda row: (-int(row["count"]), str(row["category"])))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([row["category"], int(row["count"]), int(row.get("found", 0)), int(row.get("sampled", 0))])
    return buffer.getvalue().encode("utf-8")


def distribution_png(counts: Mapping[str, int], *, left_out: Iterable[str] = (), min_per_category: int | None = None,
                     title: str | None = None) -> bytes:
    """PNG bytes of the bar chart of ``ok`` images per category (``counts``: category -> count)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    left_out = set(left_out)
    keys = sorted(counts, key=lambda key: (-int(counts[key]), str(key)))
    values = [int(counts[key]) for key in keys]
    longest = max((len(str(key)) for key in keys), default=10)
    height = max(2.4, INCHES_PER_CATEGORY * len(keys)) + 1.1
    width = 5.5 + 0.07 * longest
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    total = sum(values)
    if title is None:
        title = f"Images per category after cleaning\n{total:,} ok images in {len(keys)} categories"
    axes.set_title(title, fontsize=FONT_SIZE + 2, loc="left")
    if not keys:
        axes.text(0.5, 0.5, "no ok images", ha="center", va="center", transform=axes.transAxes, fontsize=FONT_SIZE + 2)
        axes.set_axis_off()
    else:
        positions = list(range(len(keys)))
        colors = [LEFT_OUT_COLOR if key in left_out else KEPT_COLOR for key in keys]
        hatches = ["//" if key in left_out else "" for key in keys]
        bars = axes.barh(positions, values, color=colors, height=0.72, edgecolor="white", linewidth=0.5)
        for bar, hatch in zip(bars, hatches):
            if hatch:
                bar.set_hatch(hatch)
                bar.set_edgecolor("#444444")
        axes.set_yticks(positions, [str(key) for key in keys], fontsize=FONT_SIZE)
        axes.set_ylim(len(keys) - 0.5, -0.5)
        top = max(values) or 1
        for position, value in zip(positions, values):
            axes.text(value + top * 0.01, position, f"{value:,}", va="center", fontsize=FONT_SIZE - 1)
        axes.set_xlim(0, top * 1.16)
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        axes.set_xlabel("ok images", fontsize=FONT_SIZE + 1)
        axes.set_ylabel("category", fontsize=FONT_SIZE + 1)
        axes.tick_params(axis="x", labelsize=FONT_SIZE)
        axes.spines[["top", "right"]].set_visible(False)
        axes.grid(axis="x", color="#dddddd", linewidth=0.6)
        axes.set_axisbelow(True)
        if left_out & set(keys):
            rule = f"fewer than {min_per_category} ok images" if min_per_category else "too few ok images"
            axes.legend(handles=[Patch(facecolor=KEPT_COLOR, label="in the sample"),
                                 Patch(facecolor=LEFT_OUT_COLOR, hatch="//", edgecolor="#444444",
                                       label=f"left out ({rule})")],
                        loc="lower right", fontsize=FONT_SIZE, frameon=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return buffer.getvalue()
