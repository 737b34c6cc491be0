"""The study's Table 4.1: rows feature stores, columns classifiers, row and column averages; md, csv and tex.

Rows are keyed by the feature store (``key``), so two stores of one backbone spec (e.g. with and without
``--tta``) are two rows; a row is labelled with its spec, plus the store key when the spec is not unique.
The report builds its richer table from the same :func:`results_table`.
"""
from __future__ import annotations

import math

AVERAGE = "average"


def row_key(row: dict) -> str:
    """The store a result row belongs to (older rows without a key: their backbone)."""
    return str(row.get("key") or row["backbone"])


def row_labels(rows) -> dict[str, str]:
    """``{store key: label}``: the backbone spec, with the key added where two stores share a spec."""
    specs = {}
    for row in rows:
        specs.setdefault(str(row["backbone"]), set()).add(row_key(row))
    return {row_key(row): str(row["backbone"]) if len(specs[str(row["backbone"])]) == 1 else f"{row['backbone']} ({row_key(row)})"
            for row in rows}


def results_table(rows, value: str = "test_f1_macro") -> tuple[list[str], list[str], dict]:
    """``(store keys, classifiers, cells)`` with averages: ``cells[(key, classifier)]``, AVERAGE on either axis.

    Keys are ordered by their label; classifiers in catalog order. A row or column average covers the cells
    present; a missing cell is NaN (shown as "-").
    """
    from pintopic.classify.catalog import ENTRIES

    labels = row_labels(rows)
    backbones = sorted(labels, key=lambda key: (labels[key], key))
    order = list(ENTRIES)
    classifiers = sorted({row["classifier"] for row in rows}, key=lambda name: (order.index(name) if name in order else 99, name))
    cells = {(row_key(row), row["classifier"]): float(row[value]) for row in rows}

    def mean(values):
        values = [v for v in values if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    for backbone in backbones:
        cells[(backbone, AVERAGE)] = mean([cells.get((backbone, c), math.nan) for c in classifiers])
    for classifier in classifiers + [AVERAGE]:
        cells[(AVERAGE, classifier)] = mean([cells.get((b, classifier), math.nan) for b in backbones])
    return backbones, classifiers, cells


def _bold_cells(backbones, classifiers, cells) -> set:
    """The best single value, the best row average and the best column average."""
    def best(keys):
        present = [k for k in keys if not math.isnan(cells.get(k, math.nan))]
        top = max((round(cells[k], 3) for k in present), default=None)
        return {k for k in present if round(cells[k], 3) == top}

    return (best([(b, c) for b in backbones for c in classifiers])
            | best([(b, AVERAGE) for b in backbones]) | best([(AVERAGE, c) for c in classifiers]))


def _grid(backbones, classifiers, cells, labels, bold=None, wrap=lambda text: f"**{text}**"):
    bold = bold or set()
    lines = []
    for backbone in backbones + [AVERAGE]:
        line = [labels.get(backbone, backbone)]
        for classifier in classifiers + [AVERAGE]:
            value = cells.get((backbone, classifier), math.nan)
            text = "-" if math.isnan(value) else f"{value:.3f}"
            line.append(wrap(text) if (backbone, classifier) in bold else text)
        lines.append(line)
    return lines


def table_markdown(rows) -> str:
    backbones, classifiers, cells = results_table(rows)
    header = ["backbone"] + classifiers + [AVERAGE]
    body = _grid(backbones, classifiers, cells, row_labels(rows), _bold_cells(backbones, classifiers, cells))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    return "\n".join(lines) + "\n"


def table_csv(rows) -> str:
    backbones, classifiers, cells = results_table(rows)
    from pintopic.runio import csv_text

    labels = row_labels(rows)
    lines = [["backbone"] + classifiers + [AVERAGE]]
    for backbone in backbones + [AVERAGE]:
        lines.append([labels.get(backbone, backbone)] + [
            "" if math.isnan(cells.get((backbone, c), math.nan)) else f"{cells[(backbone, c)]:.6f}"
            for c in classifiers + [AVERAGE]])
    return csv_text(lines)


def _tex_escape(text: str) -> str:
    return text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")


def table_tex(rows) -> str:
    backbones, classifiers, cells = results_table(rows)
    bold = _bold_cells(backbones, classifiers, cells)
    body = _grid(backbones, classifiers, cells, row_labels(rows), bold, wrap=lambda text: rf"\textbf{{{text}}}")
    header = ["backbone"] + classifiers + [AVERAGE]
    lines = [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\hline",
             " & ".join(_tex_escape(h) for h in header) + r" \\", r"\hline"]
    for i, line in enumerate(body):
        if i == len(body) - 1:
            lines.append(r"\hline")
        lines.append(" & ".join([_tex_escape(line[0])] + line[1:]) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
