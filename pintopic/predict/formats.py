"""Predictions as text: an aligned table, JSON, or CSV (one row per image and rank)."""
from __future__ import annotations

import csv
import io
import json
import os


def format_predictions(predictions: list[dict], fmt: str = "table") -> str:
    """Predictions as an aligned text table, JSON, or CSV (one row per image and rank).

    Paths that are not valid UTF-8 are shown with ``\\xNN`` escapes, so the output always prints.
    """
    predictions = [{**item, "path": _display(item["path"])} for item in predictions]
    if fmt == "json":
        return json.dumps(predictions, indent=2, ensure_ascii=False)
    rows = []
    for item in predictions:
        if item.get("error"):
            rows.append([item["path"], "", "", "", f"error: {item['error']}"])
            continue
        for rank, entry in enumerate(item["top"], start=1):
            rows.append([item["path"], str(rank), entry["category"], f"{entry['score']:.4f}", item["score_kind"]])
    header = ["path", "rank", "category", "score", "note"]
    if fmt == "csv":
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([header] + rows)
        return buffer.getvalue().rstrip("\n")
    if fmt != "table":
        from pintopic.errors import PintopicError

        raise PintopicError(f"unknown format {fmt!r}; choose table, json or csv")
    widths = [max(len(line[i]) for line in [header] + rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header] + rows)


def _display(path) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")
