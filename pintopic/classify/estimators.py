"""Building a classifier by name: a Pipeline(StandardScaler, the catalog's model step), and reading its scores.

Standardisation is fitted on training rows only (inside the pipeline, and per fold in the searches).
What each name builds is in :mod:`pintopic.classify.catalog`.
"""
from __future__ import annotations

import numpy as np

from pintopic.classify.catalog import Context, entry
from pintopic.errors import PintopicError


def pipeline(model):
    """``Pipeline([("scale", StandardScaler()), ("model", model)])``: how every classifier sees features."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()), ("model", model)])


def build_classifier(name: str, params: dict | None = None, *, metric: str = "euclidean", seed: int = 0,
                     n_samples: int | None = None, n_classes: int | None = None, n_features: int | None = None,
                     context: Context | None = None):
    """A fresh, unfitted pipeline for ``name`` with the given hyper-parameters."""
    item = entry(name)
    if item.build is None:
        raise PintopicError(f"{name!r} is not built from hyper-parameters alone ({item.summary})")
    context = context or Context(seed=seed, metric=metric, n_samples=n_samples, n_classes=n_classes,
                                 n_features=n_features)
    return pipeline(item.function(item.build)(dict(params or {}), context))


def class_scores(model, X) -> tuple[np.ndarray, str]:
    """Per-class scores ``(n, K)`` in ``classes_`` order and their kind ("probability" or "decision")."""
    if hasattr(model[-1], "predict_proba"):
        return model.predict_proba(X), "probability"
    scores = model.decision_function(X)
    if scores.ndim == 1:
        scores = np.stack([-scores, scores], axis=1)
    return scores, "decision"
