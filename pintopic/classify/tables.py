"""The study's Table 4.1: rows backbones, columns classifiers, row and column averages; md, csv and tex."""
from __future__ import annotations

import math

AVERAGE = "average"


def results_table(rows, value: str = "test_f1_macro") -> tuple[list[str], list[str], dict]:
    """``(backbones, classifiers, cells)`` with averages: ``cells[(backbone, classifier)]``, AVERAGE on either axis.

    A row or column average covers the cells present; a missing cell is NaN (shown as "-").
    """
    backbones = sorted({row["backbone"] for row in rows})
    order = ["knn", "lsvm", "nn"]
    classifiers = sorted({row["classifier"] for row in rows}, key=lambda name: (order.index(name) if name in order else 99, name))
    cells = {(row["backbone"], row["classifier"]): float(row[value]) for row in rows}

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


def _grid(backbones, classifiers, cells, bold=None, wrap=lambda text: f"**{text}**"):
    bold = bold or set()
    lines = []
    for backbone in backbones + [AVERAGE]:
        line = [backbone]
        for classifier in classifiers + [AVERAGE]:
            value = cells.get((backbone, classifier), math.nan)
            text = "-" if math.isnan(value) else f"{value:.3f}"
            line.append(wrap(text) if (backbone, classifier) in bold else text)
        lines.append(line)
    return lines


def table_markdown(rows) -> str:
    backbones, classifiers, cells = results_table(rows)
    header = ["backbone"] + classifiers + [AVERAGE]
    body = _grid(backbones, classifiers, cells, _bold_cells(backbones, classifiers, cells))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    return "\n".join(lines) + "\n"


def table_csv(rows) -> str:
    backbones, classifiers, cells = results_table(rows)
    lines = [["backbone"] + classifiers + [AVERAGE]]
    for backbone in backbones + [AVERAGE]:
        lines.append([backbone] + [
            "" if math.isnan(cells.get((backbone, c), math.nan)) else f"{cells[(backbone, c)]:.6f}"
            for c in classifiers + [AVERAGE]])
    return "\n".join(",".join(line) for line in lines) + "\n"


def _tex_escape(text: str) -> str:
    return text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")


def table_tex(rows) -> str:
    backbones, classifiers, cells = results_table(rows)
    bold = _bold_cells(backbones, classifiers, cells)
    body = _grid(backbones, classifiers, cells, bold, wrap=lambda text: rf"\textbf{{{text}}}")
    header = ["backbone"] + classifiers + [AVERAGE]
    lines = [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\hline",
             " & ".join(_tex_escape(h) for h in header) + r" \\", r"\hline"]
    for i, line in enumerate(body):
        if i == len(body) - 1:
            lines.append(r"\hline")
        lines.append(" & ".join([_tex_escape(line[0])] + line[1:]) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
