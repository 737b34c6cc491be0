"""The category distribution (the study's Figure 3.3): ``distribution.csv`` and ``distribution.png``.

One horizontal bar per category, sorted largest first, in the style every pintopic figure shares
(:mod:`pintopic.charts`); categories left out of the sample (fewer ``ok`` images than
``--min-per-category``) are drawn hatched in grey. The same counts give the same PNG bytes.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from pintopic.runio import csv_text

CSV_COLUMNS = ("category", "count", "found", "sampled")


def distribution_csv(rows: Iterable[Mapping]) -> bytes:
    """CSV text with ``category,count,found,sampled`` (``count``: ok images), largest count first."""
    rows = sorted(rows, key=lambda row: (-int(row["count"]), str(row["category"])))
    lines = [[row["category"], int(row["count"]), int(row.get("found", 0)), int(row.get("sampled", 0))] for row in rows]
    return csv_text([CSV_COLUMNS, *lines]).encode("utf-8")


def distribution_png(counts: Mapping[str, int], *, left_out: Iterable[str] = (), min_per_category: int | None = None,
                     title: str | None = None) -> bytes:
    """PNG bytes of the bar chart of ``ok`` images per category (``counts``: category -> count)."""
    from pintopic.charts import horizontal_bars, to_png

    values = {str(key): int(count) for key, count in counts.items()}
    if title is None:
        title = f"Images per category after cleaning\n{sum(values.values()):,} ok images in {len(values)} categories"
    rule = f"fewer than {min_per_category} ok images" if min_per_category else "too few ok images"
    figure = horizontal_bars(values, xlabel="ok images", title=title, value_format="{:,.0f}",
                             set_apart={str(key) for key in left_out}, set_apart_label=f"left out ({rule})",
                             kept_label="in the sample")
    return to_png(figure)
