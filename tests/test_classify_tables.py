"""The study's Table 4.1 layout with correct averages, and bold best values in md and tex."""
from __future__ import annotations

import math

import pytest

from pintopic.classify.metrics import classification_summary, confusion_csv
from pintopic.classify.tables import (
    AVERAGE,
    results_table,
    table_csv,
    table_markdown,
    table_tex,
)

ROWS = [
    {"backbone": "convnext_b", "classifier": "knn", "test_f1_macro": 0.115},
    {"backbone": "convnext_b", "classifier": "lsvm", "test_f1_macro": 0.080},
    {"backbone": "convnext_b", "classifier": "nn", "test_f1_macro": 0.020},
    {"backbone": "effnetv2_b0", "classifier": "knn", "test_f1_macro": 0.090},
    {"backbone": "effnetv2_b0", "classifier": "lsvm", "test_f1_macro": 0.070},
    {"backbone": "effnetv2_b0", "classifier": "nn", "test_f1_macro": 0.002},
]


def test_averages_are_right():
    backbones, classifiers, cells = results_table(ROWS)
    assert backbones == ["convnext_b", "effnetv2_b0"] and classifiers == ["knn", "lsvm", "nn"]
    assert cells[("convnext_b", AVERAGE)] == pytest.approx((0.115 + 0.080 + 0.020) / 3)
    assert cells[("effnetv2_b0", AVERAGE)] == pytest.approx(0.162 / 3)
    assert cells[(AVERAGE, "knn")] == pytest.approx(0.1025)
    assert cells[(AVERAGE, "nn")] == pytest.approx(0.011)
    assert cells[(AVERAGE, AVERAGE)] == pytest.approx(0.377 / 6)


def test_csv_md_tex_layout_and_bold():
    csv_lines = table_csv(ROWS).splitlines()
    assert csv_lines[0] == "backbone,knn,lsvm,nn,average"
    assert csv_lines[1].startswith("convnext_b,0.115000,0.080000,0.020000,0.071667")
    assert csv_lines[-1].startswith("average,0.102500,0.075000,0.011000,")
    md = table_markdown(ROWS)
    assert "| convnext_b | **0.115** | 0.080 | 0.020 | **0.072** |" in md
    assert "| average | **0.103** | 0.075 | 0.011 | 0.063 |" in md
    tex = table_tex(ROWS)
    assert r"convnext\_b & \textbf{0.115}" in tex and r"\textbf{0.072}" in tex and r"\begin{tabular}{lrrrr}" in tex


def test_missing_cell_is_a_dash_and_averages_skip_it():
    rows = ROWS[:5]
    _, _, cells = results_table(rows)
    assert math.isnan(cells.get(("effnetv2_b0", "nn"), math.nan))
    assert cells[(AVERAGE, "nn")] == pytest.approx(0.020)
    assert "| effnetv2_b0 | 0.090 | 0.070 | - |" in table_markdown(rows)


def test_summary_and_confusion_csv():
    summary = classification_summary(["a", "a", "b", "c"], ["a", "b", "b", "c"], ["a", "b", "c"])
    assert summary["accuracy"] == 0.75
    assert summary["per_category"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert summary["f1_macro"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert confusion_csv(summary["confusion"], ["a", "b", "c"]).splitlines()[1] == "a,1,1,0"


def test_two_stores_of_one_spec_are_two_rows_in_every_table():
    """Regression: table.md keyed rows by spec, so a --tta store overwrote the plain one; the report kept both."""
    rows = [{"backbone": "lite0", "key": "lite0-aaaa", "classifier": "knn", "test_f1_macro": 0.5},
            {"backbone": "lite0", "key": "lite0-bbbb", "classifier": "knn", "test_f1_macro": 0.7},
            {"backbone": "lite1", "key": "lite1-cccc", "classifier": "knn", "test_f1_macro": 0.6}]
    backbones, _, cells = results_table(rows)
    assert backbones == ["lite0-aaaa", "lite0-bbbb", "lite1-cccc"]
    assert cells[(AVERAGE, "knn")] == pytest.approx(0.6)
    md = table_markdown(rows)
    assert "| lite0 (lite0-aaaa) | 0.500 |" in md and "| lite0 (lite0-bbbb) | **0.700** |" in md
    assert "| lite1 | 0.600 |" in md
    assert table_csv(rows).splitlines()[1] == "lite0 (lite0-aaaa),0.500000,0.500000"


def test_csv_quotes_labels_with_commas():
    rows = [{"backbone": "a,b", "classifier": "knn", "test_f1_macro": 0.5}]
    import csv
    import io

    parsed = list(csv.reader(io.StringIO(table_csv(rows))))
    assert parsed[1][0] == "a,b" and parsed[1][1] == "0.500000"
