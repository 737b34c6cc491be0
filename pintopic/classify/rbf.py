"""``rbf``: an RBF-kernel SVM (one-vs-rest decision scores). ``gamma`` is given in units of 1/n_features, so
``gamma=1`` is scikit-learn's ``gamma="scale"`` on standardised features and one grid fits every feature width.
Its grid search computes each fold's squared distances once; every (gamma, C) pair is then an SVM on a
precomputed kernel.
"""
from __future__ import annotations

import numpy as np

from pintopic.classify.metrics import f1_macro
from pintopic.classify.saver import Saver
from pintopic.classify.scaling import scaled_fold

#: Below this many feature values a process pool costs more than it saves.
PARALLEL_MIN_VALUES = 2_000_000
#: Fitted SVC state that libsvm's predict reads (public and private attributes alike).
SVC_ARRAYS = ("support_", "support_vectors_", "_n_support", "_dual_coef_", "_intercept_", "_probA", "_probB",
              "classes_", "shape_fit_", "fit_status_")


def make_rbf(C: float, gamma: float, n_features: int | None, seed: int = 0):
    """RBF-kernel SVC (one-vs-rest decision scores); ``gamma`` relative to 1/n_features."""
    from sklearn.svm import SVC

    absolute = float(gamma) / n_features if n_features else "scale"
    return SVC(C=float(C), kernel="rbf", gamma=absolute, decision_function_shape="ovr", random_state=seed)


def rbf_fold_scores(X, y_index, train, val, settings, seed: int = 0) -> list[float]:
    """Macro-F1 on ``val`` for every (C, gamma) in ``settings``, from one distance computation."""
    from sklearn.metrics.pairwise import euclidean_distances
    from sklearn.svm import SVC

    X_train, X_val = scaled_fold(X, train, val)
    width = X.shape[1]
    d_train = euclidean_distances(X_train, squared=True)
    d_val = euclidean_distances(X_val, X_train, squared=True)
    scores = []
    kernels: dict[float, tuple] = {}
    for C, gamma in settings:
        if gamma not in kernels:
            kernels.clear()
            kernels[gamma] = (np.exp(-gamma / width * d_train), np.exp(-gamma / width * d_val))
        k_train, k_val = kernels[gamma]
        model = SVC(C=float(C), kernel="precomputed", decision_function_shape="ovr", random_state=seed)
        model.fit(k_train, y_index[train])
        scores.append(f1_macro(y_index[val], model.predict(k_val)))
    return scores


def build(params: dict, context):
    return make_rbf(params.get("C", 1.0), params.get("gamma", 1.0), context.n_features, context.seed)


def fold_scores(X, y_index, folds, settings, context) -> np.ndarray:
    from joblib import Parallel, delayed

    pairs = [(s["C"], s["gamma"]) for s in settings]
    parallel = Parallel(n_jobs=context.n_jobs if X.size >= PARALLEL_MIN_VALUES else 1)
    return np.asarray(parallel(delayed(rbf_fold_scores)(X, y_index, tr, va, pairs, context.seed) for tr, va in folds))


def _restore(model, arrays: dict):
    for name in SVC_ARRAYS:
        setattr(model, name, arrays[name])
    model.fit_status_ = int(arrays["fit_status_"])
    model.shape_fit_ = tuple(int(v) for v in arrays["shape_fit_"])
    model._gamma = float(arrays["_gamma"])
    model._sparse = False
    model.n_features_in_ = model.support_vectors_.shape[1]
    return model


def _svc(**params):
    from sklearn.svm import SVC

    return SVC(**params)


SAVERS = {"SVC": Saver(
    cls=_svc, params=("C", "kernel", "gamma", "decision_function_shape", "random_state"),
    arrays=lambda model: {name: np.asarray(getattr(model, name)) for name in SVC_ARRAYS} | {"_gamma": np.asarray(model._gamma)},
    restore=_restore)}
