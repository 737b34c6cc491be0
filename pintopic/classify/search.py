"""Grid search by stratified k-fold cross-validation, scoring macro-F1, then a refit on all training rows.

Same selection rule as ``GridSearchCV(scoring="f1_macro")`` (the first best mean score in grid order). Each
classifier's catalog entry (:mod:`pintopic.classify.catalog`) says how its whole grid is scored on the
folds, which is where the speed comes from (one neighbour search per fold for every k, one warm-started
solution path per fold for every C, folds in parallel processes).
"""
from __future__ import annotations

import itertools

import numpy as np

from pintopic.classify.catalog import Context, entry


def grid_settings(grid: dict) -> list[dict]:
    """Every combination of a (possibly multi-parameter) grid, parameters in sorted order, gamma outermost."""
    names = sorted(grid, key=lambda name: (name != "gamma", name))
    return [dict(zip(names, values)) for values in itertools.product(*(list(grid[n]) for n in names))]


def grid_search(name: str, X: np.ndarray, y, grid: dict, folds, *, metric: str = "euclidean", seed: int = 0,
                n_jobs: int = 2, backbone: dict | None = None) -> dict:
    """Cross-validate every grid value, pick the best mean macro-F1, refit it on all rows.

    Returns ``best_params``, ``cv_f1_macro``, ``cv_results`` (per value: mean, std, per-fold scores) and
    ``model`` (the refitted Pipeline, whose ``classes_`` are the category names in ``y``).
    """
    item = entry(name)
    y = np.asarray(y)
    classes, y_index = np.unique(y, return_inverse=True)
    context = Context(seed=seed, metric=metric, n_jobs=n_jobs, n_samples=len(y), n_classes=len(classes),
                      n_features=X.shape[1])
    if item.search is not None:
        return item.function(item.search)(X, y, grid, folds, context, backbone or {})
    settings = grid_settings(grid)
    if item.feasible is not None:
        settings = item.function(item.feasible)(settings, folds)
    scores = np.asarray(item.function(item.fold_scores)(X, y_index, folds, settings, context), dtype=np.float64)
    means = scores.mean(axis=0)
    best = int(np.argmax(means))
    best_params = dict(settings[best])
    if item.refit is not None:
        model = item.function(item.refit)(X, y, best_params, settings, context)
    else:
        from pintopic.classify.estimators import build_classifier

        model = build_classifier(name, best_params, context=context).fit(X, y)
    cv_results = [
        {"params": dict(setting), "mean_f1_macro": float(means[i]), "std_f1_macro": float(scores[:, i].std()),
         "fold_f1_macro": [float(s) for s in scores[:, i]]}
        for i, setting in enumerate(settings)
    ]
    return {"best_params": best_params, "cv_f1_macro": float(means[best]), "cv_results": cv_results, "model": model}
