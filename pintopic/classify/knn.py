"""``knn``: k-nearest neighbours as in the study (Euclidean on standardised features; cosine optional).

The grid search finds each fold's neighbours once at the largest k and votes every k from them, with ties
going to the lowest class index as in :class:`~sklearn.neighbors.KNeighborsClassifier`, so its choice is
GridSearchCV's, several times faster.
"""
from __future__ import annotations

import numpy as np

from pintopic.classify.metrics import f1_macro
from pintopic.classify.saver import Saver
from pintopic.classify.scaling import scaled_fold

#: Below this many feature values a process pool costs more than it saves.
PARALLEL_MIN_VALUES = 2_000_000


def build(params: dict, context):
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=int(params.get("k", 5)), metric=context.metric)


def knn_fold_scores(X, y_index, train, val, ks, metric: str = "euclidean") -> list[float]:
    """Macro-F1 on ``val`` for every k, from one neighbour search at the largest k."""
    from sklearn.neighbors import KNeighborsClassifier

    X_train, X_val = scaled_fold(X, train, val)
    n_classes = int(y_index.max()) + 1
    search = KNeighborsClassifier(n_neighbors=max(ks), metric=metric).fit(X_train, y_index[train])
    neighbours = search.kneighbors(X_val, return_distance=False)
    votes = np.cumsum(np.eye(n_classes, dtype=np.int32)[y_index[train][neighbours]], axis=1)
    return [f1_macro(y_index[val], votes[:, k - 1].argmax(axis=1)) for k in ks]


def feasible(settings: list[dict], folds) -> list[dict]:
    """The k values every fold's training part can serve (at least the smallest one, capped)."""
    smallest = min(len(train) for train, _ in folds)
    kept = [s for s in settings if s["k"] <= smallest]
    return kept or [{"k": min(settings[0]["k"], smallest)}]


def fold_scores(X, y_index, folds, settings, context) -> np.ndarray:
    from joblib import Parallel, delayed

    ks = [s["k"] for s in settings]
    parallel = Parallel(n_jobs=context.n_jobs if X.size >= PARALLEL_MIN_VALUES else 1)
    return np.asarray(parallel(delayed(knn_fold_scores)(X, y_index, tr, va, ks, context.metric) for tr, va in folds))


def _restore(model, arrays: dict):
    return model.fit(arrays["fit_X"], arrays["fit_y"])


SAVERS = {"KNeighborsClassifier": Saver(
    cls=lambda **params: _class()(**params),
    params=("n_neighbors", "metric", "weights", "algorithm", "leaf_size", "p"),
    arrays=lambda model: {"fit_X": model._fit_X, "fit_y": model.classes_[model._y]},
    restore=_restore)}


def _class():
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier
