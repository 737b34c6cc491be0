"""Grid search by stratified k-fold cross-validation, scoring macro-F1, then a refit on all training rows.

Same selection rule as ``GridSearchCV(scoring="f1_macro")`` (the first best mean score in grid order),
made fast per classifier: KNN finds neighbours once per fold at the largest k and votes every k from them
(ties go to the lowest class index, as in KNeighborsClassifier); the linear SVM follows one warm-started
solution path over increasing C per fold, its one-vs-rest classes split into blocks so that folds and the
refit share the processes evenly; folds (and NN settings) run in parallel processes.
"""
from __future__ import annotations

import numpy as np

from pintopic.classify.estimators import (
    build_classifier,
    ovr_columns,
    squared_hinge_path,
)
from pintopic.classify.metrics import f1_macro

#: Below this many feature values a process pool costs more than it saves.
PARALLEL_MIN_VALUES = 2_000_000


def scaled_fold(X, train, val):
    """A fold's training and validation rows, standardised with statistics of the training rows only."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X[train])
    return scaler.transform(X[train]), scaler.transform(X[val])


def knn_fold_scores(X, y_index, train, val, ks, metric: str = "euclidean") -> list[float]:
    """Macro-F1 on ``val`` for every k, from one neighbour search at the largest k."""
    from sklearn.neighbors import KNeighborsClassifier

    X_train, X_val = scaled_fold(X, train, val)
    n_classes = int(y_index.max()) + 1
    search = KNeighborsClassifier(n_neighbors=max(ks), metric=metric).fit(X_train, y_index[train])
    neighbours = search.kneighbors(X_val, return_distance=False)
    votes = np.cumsum(np.eye(n_classes, dtype=np.int32)[y_index[train][neighbours]], axis=1)
    return [f1_macro(y_index[val], votes[:, k - 1].argmax(axis=1)) for k in ks]


#: Relative gradient tolerance of the C path during CV (the refit keeps SquaredHingeSVC's tight default).
#: On the issue-8 benchmark it takes 0.7x the time of 1e-5. It moves the chosen C's CV macro-F1 by 5e-5
#: against LinearSVC's. The largest C, which converges slowest and scores far below the best, moves by up to 0.007.
LSVM_CV_TOL = 1e-4


def _column_blocks(n_classes: int, n_blocks: int) -> list[np.ndarray]:
    """The one-vs-rest columns dealt round-robin into at most ``n_blocks`` non-empty blocks."""
    n_columns = ovr_columns(n_classes)
    return [block for block in (np.arange(start, n_columns, n_blocks) for start in range(n_blocks)) if len(block)]


def lsvm_fold_decisions(X, y_index, train, val, Cs, columns) -> list[np.ndarray]:
    """Validation decision values of ``columns`` (one-vs-rest classes) for every C (in increasing order),
    from one warm-started path; a fold's classes are independent, so blocks of them run in parallel."""
    X_train, X_val = scaled_fold(X, train, val)
    n_classes = int(y_index.max()) + 1
    path = squared_hinge_path(X_train, y_index[train], n_classes, sorted(Cs), tol=LSVM_CV_TOL, columns=columns)
    return [X_val @ weights[:-1] + weights[-1] for weights in path]


def _lsvm_scores(y_val, Cs, blocks: list[list[np.ndarray]], columns: list[np.ndarray]) -> list[float]:
    """Macro-F1 for every C (given in grid order) from each column block's decision values (Cs increasing)."""
    n_columns = sum(len(index) for index in columns)
    by_increasing_C = []
    for position in range(len(Cs)):
        decision = np.empty((len(y_val), n_columns))
        for index, block in zip(columns, blocks):
            decision[:, index] = block[position]
        pred = (decision[:, 0] > 0).astype(int) if n_columns == 1 else decision.argmax(axis=1)
        by_increasing_C.append(f1_macro(y_val, pred))
    scores = np.empty(len(Cs))
    scores[np.argsort(Cs, kind="stable")] = by_increasing_C
    return scores.tolist()


def lsvm_path_search(X, y_index, folds, Cs, parallel, n_blocks: int) -> list[list[float]]:
    """Per fold, macro-F1 for every C; each fold's classes split into ``n_blocks`` parallel tasks (so five
    folds keep two processes equally busy instead of leaving one idle for the last fold)."""
    from joblib import delayed

    columns = _column_blocks(int(y_index.max()) + 1, n_blocks)
    flat = parallel(delayed(lsvm_fold_decisions)(X, y_index, tr, va, Cs, block) for tr, va in folds for block in columns)
    return [_lsvm_scores(y_index[va], Cs, flat[i * len(columns):(i + 1) * len(columns)], columns)
            for i, (_, va) in enumerate(folds)]


def lsvm_weights(X, y_index, n_classes, C, Cs, columns, tol):
    """The refit's weights for ``columns``: a warm-started path through the grid's Cs up to the chosen one."""
    return squared_hinge_path(X, y_index, n_classes, sorted(c for c in Cs if c <= C), tol=tol, columns=columns)[-1]


def fit_lsvm(X, y, C: float, Cs, parallel, n_blocks: int):
    """The refitted lsvm Pipeline, its classes solved in parallel blocks."""
    from joblib import delayed
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from pintopic.classify.estimators import SquaredHingeSVC

    classes, y_index = np.unique(np.asarray(y), return_inverse=True)
    scaler = StandardScaler().fit(X)
    X_scaled = scaler.transform(X)
    model = SquaredHingeSVC(C=C)
    columns = _column_blocks(len(classes), n_blocks)
    blocks = parallel(delayed(lsvm_weights)(X_scaled, y_index, len(classes), C, Cs, block, model.tol)
                      for block in columns)
    weights = np.empty((X.shape[1] + 1, sum(len(block) for block in columns)))
    for block, solved in zip(columns, blocks):
        weights[:, block] = solved
    model.set_weights(weights, classes)
    return Pipeline([("scale", scaler), ("model", model)])


def nn_fold_score(X, y_index, train, val, batch_size: int, seed: int) -> float:
    """Macro-F1 on ``val`` of the NN pipeline with this batch size."""
    n_classes = int(y_index.max()) + 1
    model = build_classifier("nn", {"batch_size": batch_size}, seed=seed, n_samples=len(train), n_classes=n_classes)
    model.fit(X[train], y_index[train])
    return f1_macro(y_index[val], model.predict(X[val]))


def grid_search(name: str, X: np.ndarray, y, grid: dict, folds, *, metric: str = "euclidean", seed: int = 0,
                n_jobs: int = 2) -> dict:
    """Cross-validate every grid value, pick the best mean macro-F1, refit it on all rows.

    Returns ``best_params``, ``cv_f1_macro``, ``cv_results`` (per value: mean, std, per-fold scores) and
    ``model`` (the refitted Pipeline, whose ``classes_`` are the category names in ``y``).
    """
    from joblib import Parallel, delayed

    y = np.asarray(y)
    classes, y_index = np.unique(y, return_inverse=True)
    if name in ("logreg", "rbf", "wknn", "lda"):
        from pintopic.classify.beyond import fold_scores

        settings, scores = fold_scores(name, X, y_index, folds, grid, seed=seed, n_jobs=n_jobs)
        return _best_and_refit(name, X, y, settings, scores, metric=metric, seed=seed, n_classes=len(classes))
    (parameter, values), = grid.items()
    values = list(values)
    if name == "knn":
        smallest_train = min(len(train) for train, _ in folds)
        values = [k for k in values if k <= smallest_train] or [min(values[0], smallest_train)]
    # an NN fit is always heavy enough to pay for a second process; KNN/SVM folds only on large inputs
    jobs = n_jobs if name == "nn" or X.size >= PARALLEL_MIN_VALUES else 1
    parallel = Parallel(n_jobs=jobs)
    refit = None
    if name == "knn":
        per_fold = parallel(delayed(knn_fold_scores)(X, y_index, tr, va, values, metric) for tr, va in folds)
    elif name == "lsvm":
        blocks = 2 * jobs if jobs > 1 else 1  # more tasks than processes: uneven blocks still balance out
        per_fold = lsvm_path_search(X, y_index, folds, values, parallel, blocks)
        refit = lambda params: fit_lsvm(X, y, params["C"], values, parallel, blocks)  # noqa: E731
    else:
        flat = parallel(delayed(nn_fold_score)(X, y_index, tr, va, v, seed) for tr, va in folds for v in values)
        per_fold = [flat[i * len(values):(i + 1) * len(values)] for i in range(len(folds))]
    scores = np.asarray(per_fold, dtype=np.float64)  # (folds, values)
    settings = [{parameter: value} for value in values]
    return _best_and_refit(name, X, y, settings, scores, metric=metric, seed=seed, n_classes=len(classes),
                           refit=refit)


def _best_and_refit(name, X, y, settings, scores, *, metric, seed, n_classes, refit=None) -> dict:
    """The first best mean setting, refitted on all rows (by ``refit(params)`` when given), and the per-setting CV record."""
    means = scores.mean(axis=0)
    best = int(np.argmax(means))
    best_params = dict(settings[best])
    if refit is not None:
        model = refit(best_params)
    else:
        model = build_classifier(name, best_params, metric=metric, seed=seed,
                                 n_samples=len(y), n_classes=n_classes, n_features=X.shape[1])
        model.fit(X, y)
    cv_results = [
        {"params": dict(setting), "mean_f1_macro": float(means[i]), "std_f1_macro": float(scores[:, i].std()),
         "fold_f1_macro": [float(s) for s in scores[:, i]]}
        for i, setting in enumerate(settings)
    ]
    return {"best_params": best_params, "cv_f1_macro": float(means[best]), "cv_results": cv_results, "model": model}
