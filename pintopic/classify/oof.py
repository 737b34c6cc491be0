"""Out-of-fold class probabilities: every row predicted by a model that never saw its group (its board).

Finding label issues and training through the noise both start here. The folds are grouped by board,
so no pin is scored by a model that learnt its board-mates: a wrongly filed board would otherwise teach
the model its wrong label and then look right. The model is a multinomial logistic regression (the
"head") on the top principal directions of the standardised features (the "basis", fitted once without
labels and shared by every fold): calibrated enough for confident learning, and fast (20,000 x 1,280 in
well under a minute on 2 cores). BLAS runs single-threaded and folds in parallel processes: on a busy
2-core machine threaded BLAS made these small fits 10-20 times slower.
"""
from __future__ import annotations

import numpy as np

from pintopic.classify.ensemble import aligned_columns

#: Principal directions kept by :func:`fit_basis`.
PROBABILITY_COMPONENTS = 256
#: Regularisation of the flagging head per training row (on whitened principal components; sklearn's
#: ``C = 1 / (alpha * n)``): strong, which keeps it from learning the noise and converges fast. On the noisy
#: openclipart crawl (5,000 training pins) C = 0.01 (alpha 0.02) and C = 0.05 flag equally well.
PROBABILITY_ALPHA = 0.02


def single_thread_blas():
    """A context in which BLAS uses one thread (parallelism comes from processes instead)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def fit_basis(X, seed: int = 0, components: int = PROBABILITY_COMPONENTS):
    """StandardScaler -> whitened PCA fitted on ``X`` (no labels), as a Pipeline whose ``transform`` gives the head's input."""
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    components = max(1, min(int(components), X.shape[0] - 1, X.shape[1]))
    basis = Pipeline([("scale", StandardScaler()),
                      ("pca", PCA(n_components=components, whiten=True, svd_solver="randomized", random_state=seed))])
    with single_thread_blas():
        return basis.fit(X)


def project(basis, X) -> np.ndarray:
    with single_thread_blas():
        return basis.transform(X)


def probability_head(seed: int = 0, alpha: float = PROBABILITY_ALPHA, n_rows: int = 1):
    """A fresh multinomial LogisticRegression for projected features, regularised by ``alpha`` per row for
    ``n_rows`` training rows (so that a small and a large training set are held to the same strength)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0 / (float(alpha) * max(int(n_rows), 1)), max_iter=500, tol=1e-4, random_state=seed)


def fit_head(head, Z, y, sample_weight=None, alpha: float | None = None):
    """A clone of ``head`` fitted on projected rows ``Z`` (with per-row weights when given); with ``alpha``,
    its C is set for these rows (``1 / (alpha * n)``)."""
    from sklearn.base import clone

    head = clone(head)
    if alpha is not None:
        head.set_params(C=1.0 / (float(alpha) * max(len(y), 1)))
    with single_thread_blas():
        return head.fit(Z, y, sample_weight=sample_weight)


def assemble(basis, head):
    """One Pipeline (scale, PCA, head) that takes raw features, for predicting and saving."""
    from sklearn.pipeline import Pipeline

    return Pipeline([*basis.steps, ("model", head)])


def probabilities(model, X, classes) -> np.ndarray:
    """``model.predict_proba(X)`` with columns in ``classes`` order (a class the model never saw gets 0)."""
    with single_thread_blas():
        return aligned_columns(model.predict_proba(X), model.classes_, classes)


def _fold_probabilities(head, Z, y, train, val, classes, alpha):
    return probabilities(fit_head(head, Z[train], y[train], alpha=alpha), Z[val], classes)


def out_of_fold(Z, y, folds, classes, *, alpha: float = PROBABILITY_ALPHA, seed: int = 0, n_jobs: int = 2) -> np.ndarray:
    """``(n, K)`` probabilities of the flagging head on projected rows ``Z``, row ``i`` from the fold whose
    validation part holds it."""
    from joblib import Parallel, delayed

    y = np.asarray(y)
    parallel = Parallel(n_jobs=max(1, min(n_jobs, len(folds))))
    head = probability_head(seed)
    parts = parallel(delayed(_fold_probabilities)(head, Z, y, train, val, classes, alpha) for train, val in folds)
    result = np.zeros((len(y), len(classes)))
    for (_, val), part in zip(folds, parts):
        result[val] = part
    return result


def grouped_out_of_fold(X, y, groups, classes, *, n_splits: int = 5, seed: int = 0, n_jobs: int = 2):
    """``(probabilities, folds)``: the flagging model's out-of-fold probabilities on raw features ``X``, folds
    grouped by ``groups`` (a group is never split); the basis is fitted once on all rows (it sees no label)."""
    from pintopic.dataset.split import cv_folds

    folds = cv_folds(np.asarray(y), np.asarray(groups), n_splits=n_splits, seed=seed)
    Z = project(fit_basis(X, seed), X)
    return out_of_fold(Z, y, folds, classes, seed=seed, n_jobs=n_jobs), folds
