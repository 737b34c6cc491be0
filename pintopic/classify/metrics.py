"""Scores of one classifier on the test part: macro-F1 (headline), accuracy, per category, confusion."""
from __future__ import annotations

import numpy as np


def f1_macro(y_true, y_pred) -> float:
    """Macro-averaged F1, the study's metric (every CV fold and ensemble choice is scored with it)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="macro"))


def classification_summary(y_true, y_pred, categories) -> dict:
    """Macro-F1, accuracy, per-category precision/recall/F1/support and the confusion matrix (rows: true)."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    categories = list(categories)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=categories, zero_division=0)
    return {
        "f1_macro": float(f1_score(y_true, y_pred, labels=categories, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "per_category": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(categories, precision, recall, f1, support)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=categories).astype(np.int64),
    }


def confusion_csv(confusion: np.ndarray, categories) -> str:
    """The confusion matrix as CSV with category names on both axes (rows: true, columns: predicted), quoted
    where needed (``hats, caps``, ``say "cheese"``); read it back as text (:func:`pintopic.safeio.read_csv_text`)."""
    from pintopic.runio import csv_text

    return csv_text([["true\\predicted", *map(str, categories)],
                     *([str(name), *(int(v) for v in row)] for name, row in zip(categories, confusion))])


#: How many ranked categories the recorded test predictions keep.
TOP_K_RECORDED = 3


def top_predictions(scores: np.ndarray, classes, y_true, ids, kind: str):
    """Per test image (a pyarrow table): true and predicted category and the top categories with their scores."""
    import pyarrow as pa

    top = np.argsort(-scores, axis=1, kind="stable")[:, :min(TOP_K_RECORDED, scores.shape[1])]
    columns = {"image_id": list(ids), "true": [str(v) for v in y_true], "pred": [str(classes[i]) for i in top[:, 0]]}
    columns["correct"] = [t == p for t, p in zip(columns["true"], columns["pred"])]
    for rank in range(top.shape[1]):
        columns[f"top{rank + 1}"] = [str(classes[i]) for i in top[:, rank]]
        columns[f"score{rank + 1}"] = scores[np.arange(len(top)), top[:, rank]].astype(np.float64)
    columns["score_kind"] = [kind] * len(top)
    return pa.table(columns)
