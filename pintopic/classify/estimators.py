"""The study's three classifiers as scikit-learn pipelines (standardisation fitted on training rows only).

- ``knn``: :class:`~sklearn.neighbors.KNeighborsClassifier`, Euclidean as in the study (``metric="cosine"`` optional).
- ``lsvm``: a one-vs-rest linear SVM with LinearSVC's exact objective (squared hinge, L2, regularised
  intercept with ``intercept_scaling=1``), solved by :class:`SquaredHingeSVC`: a finite Newton method whose
  solution path over increasing C is warm-started, so the whole C grid costs about one LinearSVC fit.
- ``nn``: the "3-layer" network (input -> one hidden layer -> softmax output):
  :class:`~sklearn.neural_network.MLPClassifier` with :data:`NN_HIDDEN_UNITS` ReLU units, Adam (lr 1e-3),
  at most :data:`NN_MAX_EPOCHS` epochs, early stopping on a 10% stratified validation part after 10 epochs
  without improvement; ``batch_size`` is the grid parameter.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from pintopic.errors import PintopicError

CLASSIFIERS: tuple[str, ...] = ("knn", "lsvm", "nn", "logreg", "rbf", "wknn", "lda", "zeroshot")
NN_HIDDEN_UNITS = 256
NN_MAX_EPOCHS = 200
NN_PATIENCE = 10
NN_VALIDATION_FRACTION = 0.1
#: Preconditioned CG steps tried with an earlier Hessian's factor before refactoring. Measured on the
#: issue-8 benchmark, more steps only cost time: the active set changes too much between Newton steps.
MAX_CG_STEPS = 2
#: With the current Hessian's own (float32) factor, CG only mops up rounding: one or two steps.
FRESH_FACTOR_CG_STEPS = 4


def ovr_columns(n_classes: int) -> int:
    """How many one-vs-rest problems a linear SVM solves: one for two classes (as in LinearSVC), else one per class."""
    return 1 if n_classes == 2 else n_classes


def _target_matrix(y_index: np.ndarray, n_classes: int) -> np.ndarray:
    """One-vs-rest targets in {-1, +1}; two classes get one column (+1 = the second class), as in LinearSVC."""
    if ovr_columns(n_classes) == 1:
        return np.where(y_index == 1, 1.0, -1.0)[:, None]
    targets = -np.ones((len(y_index), n_classes))
    targets[np.arange(len(y_index)), y_index] = 1.0
    return targets


def _exact_line_search(margins: np.ndarray, step_margins: np.ndarray, w_dot_d: np.ndarray,
                       d_dot_d: np.ndarray, C: float, max_steps: int = 50) -> np.ndarray:
    """Per column, the step t minimising the piecewise-quadratic objective along the Newton direction.

    The objective's slope is piecewise linear and increasing in t, so Newton's method on it lands on the
    root within a few pieces; a bracket of known-negative and known-positive slopes guards against cycling.
    """
    low = np.zeros_like(w_dot_d)
    high = np.full_like(w_dot_d, np.inf)
    t = np.ones_like(w_dot_d)  # the full Newton step, exact when the active set does not change
    for _ in range(max_steps):
        slack = 1.0 - margins - t * step_margins
        hinge = slack > 0.0
        slope = w_dot_d + t * d_dot_d - 2.0 * C * np.einsum("ij,ij->j", np.where(hinge, slack, 0.0), step_margins)
        done = np.abs(slope) <= 1e-12 * (1.0 + np.abs(w_dot_d) + t * d_dot_d)
        if done.all():
            break
        low = np.where(slope < 0, t, low)
        high = np.where(slope > 0, t, high)
        curvature = d_dot_d + 2.0 * C * np.einsum("ij,ij->j", hinge, step_margins * step_margins)
        proposal = t - slope / curvature
        inside = (proposal > low) & (proposal < high)
        fallback = np.where(np.isfinite(high), 0.5 * (low + high), 2.0 * low)
        t = np.where(done, t, np.where(inside, proposal, fallback))
    return t


def _update_gram(gram: np.ndarray, valid: np.ndarray, features: np.ndarray, active: np.ndarray,
                 now_active: np.ndarray, full: list, columns) -> None:
    """Keep ``gram[j] = X_I'X_I`` for the active rows of each of ``columns`` that needs it (more active rows
    than features), by the cheapest of: adding/removing the rows that changed, the full ``X'X`` (computed
    once, in ``full[0]``) minus the inactive rows, or the active rows afresh; other columns are marked stale."""
    dim = features.shape[1]
    for column in columns:
        is_active, was_active = now_active[:, column], active[:, column]
        n_active = is_active.sum()
        if n_active < _woodbury_rows(dim, len(features)):
            valid[column] = False
            continue
        entered, left = is_active & ~was_active, was_active & ~is_active
        n_changed = entered.sum() + left.sum()
        if valid[column] and n_changed == 0:
            continue
        n_inactive = len(features) - n_active
        if valid[column] and n_changed < min(n_active, n_inactive):
            rows_in, rows_out = features[entered], features[left]
            gram[column] += rows_in.T @ rows_in - rows_out.T @ rows_out
        elif n_inactive < n_active:  # most rows active (noisy labels, large C): subtract the few inactive ones
            if full[0] is None:
                full[0] = features.T @ features
            rows = features[~is_active]
            np.subtract(full[0], rows.T @ rows, out=gram[column])
        else:
            rows = features[is_active]
            gram[column] = rows.T @ rows
        valid[column] = True


def _woodbury_rows(dim: int, n_rows: int) -> int:
    """Below this many active rows a Newton step solves the n_I x n_I system instead: forming it afresh costs
    less than the d x d Gram matrix, which pays only once it can be updated and reused across steps, i.e.
    when there are many more rows than features."""
    return dim // 4 if n_rows >= 2 * dim else dim


def _woodbury_direction(rows: np.ndarray, C: float, gradient: np.ndarray) -> np.ndarray:
    """``-(I + 2C A'A)^-1 gradient`` through the active rows' n_I x n_I system (Woodbury identity)."""
    from scipy.linalg import cho_factor, cho_solve

    inner = rows @ rows.T
    inner.flat[:: len(rows) + 1] += 1.0 / (2.0 * C)
    return -(gradient - rows.T @ cho_solve(cho_factor(inner, check_finite=False), rows @ gradient, check_finite=False))


def _preconditioned_cg(gram: np.ndarray, C: float, gradient: np.ndarray, factor, max_steps: int,
                       rtol: float) -> tuple[np.ndarray, bool]:
    """Conjugate gradients on ``(I + 2C gram) d = -gradient`` preconditioned by a float32 Cholesky ``factor``;
    ``(d, converged)``. Every iterate is a descent direction, so an unconverged one is still usable."""
    from scipy.linalg import cho_solve

    def precondition(vector):
        return cho_solve(factor, vector.astype(np.float32), check_finite=False).astype(np.float64)

    solution = np.zeros_like(gradient)
    residual = -gradient
    preconditioned = precondition(residual)
    search = preconditioned.copy()
    product = residual @ preconditioned
    limit = rtol * np.linalg.norm(gradient)
    for _ in range(max_steps):
        image = search + 2.0 * C * (gram @ search)
        alpha = product / (search @ image)
        solution += alpha * search
        residual -= alpha * image
        if np.linalg.norm(residual) <= limit:
            return solution, True
        preconditioned = precondition(residual)
        product, previous = residual @ preconditioned, product
        search = preconditioned + (product / previous) * search
    return solution, False


def _newton_direction(gram: np.ndarray, C: float, gradient: np.ndarray, factors: list, column: int,
                      rtol: float) -> np.ndarray:
    """Solve ``(I + 2C gram) d = -gradient`` to relative residual ``rtol``: a few CG steps preconditioned by an
    earlier Hessian's Cholesky factor, else refactor. The factor is float32: it only preconditions (the
    products with the Hessian stay float64), and it makes the factorisation cheaper."""
    from scipy.linalg import cho_factor

    if factors[column] is not None:
        solution, converged = _preconditioned_cg(gram, C, gradient, factors[column], MAX_CG_STEPS, rtol)
        if converged:
            return solution
    hessian = (2.0 * C) * gram.astype(np.float32)
    hessian.flat[:: gram.shape[0] + 1] += 1.0
    factors[column] = cho_factor(hessian, check_finite=False, overwrite_a=True)
    return _preconditioned_cg(gram, C, gradient, factors[column], FRESH_FACTOR_CG_STEPS, rtol)[0]


def squared_hinge_path(X: np.ndarray, y_index: np.ndarray, n_classes: int, Cs, *, tol: float = 1e-7,
                       max_iter: int = 100, columns=None) -> list[np.ndarray]:
    """Exact one-vs-rest L2 squared-hinge SVM weights (bias last, regularised) for each C, warm-started.

    Minimises ``0.5 |w|^2 + C sum_i max(0, 1 - y_i [x_i, 1] . w)^2`` per class (LinearSVC's problem) by
    the finite Newton method of Keerthi & DeCoste (2005): each step solves the quadratic on the current
    active set (``I + 2C X_I'X_I``, whose Gram matrix is updated only for rows that enter or leave; see
    :func:`_newton_direction`), then an exact line search. Classes are independent problems: ``columns``
    (indices into the one-vs-rest target columns, default all) solves a subset, so processes can share them.
    Returns one ``(d + 1, len(columns))`` array per C, in order.
    """
    from threadpoolctl import threadpool_limits

    # many small BLAS calls: one thread each is much faster than two fighting for busy cores
    # (measured 40x on a loaded 2-core machine); folds run in parallel processes instead
    with threadpool_limits(limits=1, user_api="blas"):
        return _squared_hinge_path(X, y_index, n_classes, Cs, tol=tol, max_iter=max_iter, columns=columns)


def _squared_hinge_path(X, y_index, n_classes, Cs, *, tol, max_iter, columns) -> list[np.ndarray]:
    features = np.hstack([np.asarray(X, dtype=np.float64), np.ones((X.shape[0], 1))])
    targets = _target_matrix(np.asarray(y_index), n_classes)
    if columns is not None:
        targets = np.ascontiguousarray(targets[:, list(columns)])
    dim, n_columns = features.shape[1], targets.shape[1]
    weights = np.zeros((dim, n_columns))
    margins = np.zeros(targets.shape)  # targets * (features @ weights), updated with the weights
    active = np.zeros(targets.shape, dtype=bool)
    now_active = np.zeros(targets.shape, dtype=bool)
    gram = np.zeros((n_columns, dim, dim))
    gram_valid = np.zeros(n_columns, dtype=bool)
    full_gram: list = [None]
    path = []
    for C in Cs:
        reference = np.linalg.norm(2.0 * C * features.T @ targets, axis=0) + 1e-30
        factors: list = [None] * n_columns  # Cholesky factors of an earlier Hessian at this C
        unfinished = np.arange(n_columns)  # a converged column's weights, hence its gradient, stay put
        for _ in range(max_iter):
            now_active[:, unfinished] = margins[:, unfinished] < 1.0
            _update_gram(gram, gram_valid, features, active, now_active, full_gram, unfinished)
            active[:, unfinished] = now_active[:, unfinished]
            slack = (1.0 - margins[:, unfinished]) * active[:, unfinished]
            gradient = weights[:, unfinished] - 2.0 * C * features.T @ (targets[:, unfinished] * slack)
            keep = np.linalg.norm(gradient, axis=0) > tol * reference[unfinished]
            unfinished, gradient = unfinished[keep], gradient[:, keep]
            if not len(unfinished):
                break
            direction = np.empty_like(gradient)
            # inexact Newton (Dembo et al. 1982): solve loosely far from the optimum, tightly near it
            forcing = np.clip(np.linalg.norm(gradient, axis=0) / reference[unfinished], 1e-11, 0.1)
            for position, column in enumerate(unfinished):
                if active[:, column].sum() < _woodbury_rows(dim, len(features)):
                    direction[:, position] = _woodbury_direction(features[active[:, column]], C, gradient[:, position])
                else:
                    direction[:, position] = _newton_direction(gram[column], C, gradient[:, position], factors, column,
                                                                forcing[position])
            step_margins = targets[:, unfinished] * (features @ direction)
            current = weights[:, unfinished]
            step = _exact_line_search(margins[:, unfinished], step_margins, np.einsum("ij,ij->j", current, direction),
                                      np.einsum("ij,ij->j", direction, direction), C)
            weights[:, unfinished] = current + step * direction
            margins[:, unfinished] += step * step_margins
        path.append(weights.copy())
    return path


class SquaredHingeSVC(ClassifierMixin, BaseEstimator):
    """Linear SVM, one-vs-rest, with exactly LinearSVC's objective (see :func:`squared_hinge_path`)."""

    def __init__(self, C: float = 1.0, tol: float = 1e-7, max_iter: int = 100):
        self.C = C
        self.tol = tol
        self.max_iter = max_iter

    def fit(self, X, y) -> "SquaredHingeSVC":
        self.classes_, y_index = np.unique(np.asarray(y), return_inverse=True)
        if len(self.classes_) < 2:
            raise PintopicError("a linear SVM needs at least two categories in the training rows")
        weights = squared_hinge_path(X, y_index, len(self.classes_), [self.C], tol=self.tol, max_iter=self.max_iter)[0]
        self.set_weights(weights, self.classes_)
        return self

    def set_weights(self, weights: np.ndarray, classes) -> "SquaredHingeSVC":
        """Install a solution of :func:`squared_hinge_path` (bias in the last row) as the fitted state."""
        self.classes_ = np.asarray(classes)
        self.coef_ = np.ascontiguousarray(weights[:-1].T)
        self.intercept_ = np.ascontiguousarray(weights[-1])
        self.n_features_in_ = self.coef_.shape[1]
        return self

    def decision_function(self, X) -> np.ndarray:
        scores = np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        index = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[index]


def nn_early_stopping_possible(n_samples: int, n_classes: int) -> bool:
    """MLPClassifier's stratified validation part needs at least one row per class."""
    return int(np.ceil(NN_VALIDATION_FRACTION * n_samples)) >= n_classes and n_samples - n_classes >= n_classes


def build_classifier(name: str, params: dict | None = None, *, metric: str = "euclidean", seed: int = 0,
                     n_samples: int | None = None, n_classes: int | None = None, n_features: int | None = None):
    """A fresh Pipeline(StandardScaler, classifier) for ``name`` with the given hyper-parameters."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    params = dict(params or {})
    if name == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        model = KNeighborsClassifier(n_neighbors=int(params.get("k", 5)), metric=metric)
    elif name == "lsvm":
        model = SquaredHingeSVC(C=float(params.get("C", 1.0)))
    elif name == "nn":
        from sklearn.neural_network import MLPClassifier

        early = n_samples is None or n_classes is None or nn_early_stopping_possible(n_samples, n_classes)
        model = MLPClassifier(
            hidden_layer_sizes=(NN_HIDDEN_UNITS,), activation="relu", solver="adam", learning_rate_init=1e-3,
            batch_size=int(params.get("batch_size", 64)), max_iter=NN_MAX_EPOCHS, early_stopping=early,
            validation_fraction=NN_VALIDATION_FRACTION, n_iter_no_change=NN_PATIENCE, random_state=seed,
        )
    elif name == "logreg":
        from pintopic.classify.beyond import make_logreg

        model = make_logreg(params.get("C", 1.0), seed)
    elif name == "wknn":
        from pintopic.classify.beyond import WeightedKNN

        model = WeightedKNN(n_neighbors=int(params.get("k", 20)), temperature=float(params.get("temperature", 0.05)),
                            whiten=float(params.get("whiten", 0.0)))
    elif name == "lda":
        from pintopic.classify.beyond import ShrinkageLDA

        model = ShrinkageLDA(shrinkage=float(params.get("shrinkage", 0.3)), random_state=seed)
    elif name == "rbf":
        from pintopic.classify.beyond import make_rbf

        model = make_rbf(params.get("C", 1.0), params.get("gamma", 1.0), n_features, seed)
    elif name == "zeroshot":
        raise PintopicError("the zero-shot classifier is built from a backbone's text tower: "
                            "use pintopic.classify.zeroshot.zero_shot_pipeline")
    else:
        raise PintopicError(f"unknown classifier {name!r}; choose from {', '.join(CLASSIFIERS)}")
    return Pipeline([("scale", StandardScaler()), ("model", model)])


def class_scores(pipeline, X) -> tuple[np.ndarray, str]:
    """Per-class scores ``(n, K)`` in ``classes_`` order and their kind ("probability" or "decision")."""
    if hasattr(pipeline[-1], "predict_proba"):
        return pipeline.predict_proba(X), "probability"
    scores = pipeline.decision_function(X)
    if scores.ndim == 1:
        scores = np.stack([-scores, scores], axis=1)
    return scores, "decision"
