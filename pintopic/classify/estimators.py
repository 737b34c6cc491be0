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

CLASSIFIERS: tuple[str, ...] = ("knn", "lsvm", "nn", "logreg", "rbf", "wknn", "zeroshot")
NN_HIDDEN_UNITS = 256
NN_MAX_EPOCHS = 200
NN_PATIENCE = 10
NN_VALIDATION_FRACTION = 0.1


def _target_matrix(y_index: np.ndarray, n_classes: int) -> np.ndarray:
    """One-vs-rest targets in {-1, +1}; two classes get one column (+1 = the second class), as in LinearSVC."""
    if n_classes == 2:
        return np.where(y_index == 1, 1.0, -1.0)[:, None]
    targets = -np.ones((len(y_index), n_classes))
    targets[np.arange(len(y_index)), y_index] = 1.0
    return targets


def _exact_line_search(margins: np.ndarray, step_margins: np.ndarray, w_dot_d: np.ndarray,
                       d_dot_d: np.ndarray, C: float) -> np.ndarray:
    """Per column, the step t minimising the piecewise-quadratic objective along the Newton direction."""

    def slope(t: np.ndarray) -> np.ndarray:
        slack = np.maximum(1.0 - margins - t * step_margins, 0.0)
        return w_dot_d + t * d_dot_d - 2.0 * C * np.einsum("ij,ij->j", slack, step_margins)

    low = np.zeros_like(w_dot_d)
    high = np.ones_like(w_dot_d)
    for _ in range(60):  # the Newton step is usually 1; widen the bracket where it is not
        short = slope(high) < 0
        if not short.any():
            break
        low = np.where(short, high, low)
        high = np.where(short, high * 2.0, high)
    if np.all(np.abs(slope(np.ones_like(w_dot_d))) <= 1e-12 * (1.0 + np.abs(w_dot_d))):
        return np.ones_like(w_dot_d)
    for _ in range(60):
        middle = 0.5 * (low + high)
        below = slope(middle) < 0
        low = np.where(below, middle, low)
        high = np.where(below, high, middle)
    return 0.5 * (low + high)


def _update_gram(gram: np.ndarray, valid: np.ndarray, features: np.ndarray, active: np.ndarray,
                 now_active: np.ndarray, full: list) -> None:
    """Keep ``gram[j] = X_I'X_I`` for the active rows of each column that needs it (more active rows than
    features), by the cheapest of: adding/removing the rows that changed, the full ``X'X`` (computed once,
    in ``full[0]``) minus the inactive rows, or the active rows afresh; other columns are marked stale."""
    dim = features.shape[1]
    entered, left = now_active & ~active, active & ~now_active
    for column in range(gram.shape[0]):
        n_active = now_active[:, column].sum()
        if n_active < dim:
            valid[column] = False
            continue
        n_changed = entered[:, column].sum() + left[:, column].sum()
        if valid[column] and n_changed == 0:
            continue
        n_inactive = len(features) - n_active
        if valid[column] and n_changed < min(n_active, n_inactive):
            rows_in, rows_out = features[entered[:, column]], features[left[:, column]]
            gram[column] += rows_in.T @ rows_in - rows_out.T @ rows_out
        elif n_inactive < n_active:  # most rows active (noisy labels, large C): subtract the few inactive ones
            if full[0] is None:
                full[0] = features.T @ features
            rows = features[~now_active[:, column]]
            np.subtract(full[0], rows.T @ rows, out=gram[column])
        else:
            rows = features[now_active[:, column]]
            gram[column] = rows.T @ rows
        valid[column] = True


def _woodbury_direction(rows: np.ndarray, C: float, gradient: np.ndarray) -> np.ndarray:
    """``-(I + 2C A'A)^-1 gradient`` through the active rows' n_I x n_I system (Woodbury identity)."""
    from scipy.linalg import cho_factor, cho_solve

    inner = rows @ rows.T
    inner.flat[:: len(rows) + 1] += 1.0 / (2.0 * C)
    return -(gradient - rows.T @ cho_solve(cho_factor(inner), rows @ gradient))


def _newton_direction(gram: np.ndarray, C: float, gradient: np.ndarray, factors: list, column: int,
                      max_cg: int = 8, rtol: float = 1e-11) -> np.ndarray:
    """Solve ``(I + 2C gram) d = -gradient``: conjugate gradients preconditioned by an earlier Hessian's
    Cholesky factor (the active set changes little between steps), refactoring when that stops paying
    (a factorisation costs about as much as ten CG steps, so CG gets at most ``max_cg``)."""
    from scipy.linalg import cho_factor, cho_solve

    def hessian_times(vector):
        return vector + 2.0 * C * (gram @ vector)

    if factors[column] is not None:
        solution = np.zeros_like(gradient)
        residual = -gradient
        preconditioned = cho_solve(factors[column], residual, check_finite=False)
        search = preconditioned.copy()
        product = residual @ preconditioned
        limit = rtol * np.linalg.norm(gradient)
        for _ in range(max_cg):
            image = hessian_times(search)
            alpha = product / (search @ image)
            solution += alpha * search
            residual -= alpha * image
            if np.linalg.norm(residual) <= limit:
                return solution
            preconditioned = cho_solve(factors[column], residual, check_finite=False)
            product, previous = residual @ preconditioned, product
            search = preconditioned + (product / previous) * search
    hessian = 2.0 * C * gram
    hessian.flat[:: gram.shape[0] + 1] += 1.0
    factors[column] = cho_factor(hessian, check_finite=False)
    return cho_solve(factors[column], -gradient, check_finite=False)


def squared_hinge_path(X: np.ndarray, y_index: np.ndarray, n_classes: int, Cs, *, tol: float = 1e-7,
                       max_iter: int = 100) -> list[np.ndarray]:
    """Exact one-vs-rest L2 squared-hinge SVM weights (bias last, regularised) for each C, warm-started.

    Minimises ``0.5 |w|^2 + C sum_i max(0, 1 - y_i [x_i, 1] . w)^2`` per class (LinearSVC's problem) by
    the finite Newton method of Keerthi & DeCoste (2005): each step solves the quadratic on the current
    active set (``I + 2C X_I'X_I``, whose Gram matrix is updated only for rows that enter or leave; see
    :func:`_newton_direction`), then an exact line search. Returns one ``(d + 1, n_columns)`` array per C, in order.
    """
    from threadpoolctl import threadpool_limits

    # many small BLAS calls: one thread each is much faster than two fighting for busy cores
    # (measured 40x on a loaded 2-core machine); folds run in parallel processes instead
    with threadpool_limits(limits=1, user_api="blas"):
        return _squared_hinge_path(X, y_index, n_classes, Cs, tol=tol, max_iter=max_iter)


def _squared_hinge_path(X, y_index, n_classes, Cs, *, tol, max_iter) -> list[np.ndarray]:
    features = np.hstack([np.asarray(X, dtype=np.float64), np.ones((X.shape[0], 1))])
    targets = _target_matrix(np.asarray(y_index), n_classes)
    dim, n_columns = features.shape[1], targets.shape[1]
    weights = np.zeros((dim, n_columns))
    active = np.zeros(targets.shape, dtype=bool)
    gram = np.zeros((n_columns, dim, dim))
    gram_valid = np.zeros(n_columns, dtype=bool)
    full_gram: list = [None]
    path = []
    for C in Cs:
        reference = np.linalg.norm(2.0 * C * features.T @ targets, axis=0) + 1e-30
        factors: list = [None] * n_columns  # Cholesky factors of an earlier Hessian at this C
        for _ in range(max_iter):
            margins = targets * (features @ weights)
            now_active = margins < 1.0
            _update_gram(gram, gram_valid, features, active, now_active, full_gram)
            active = now_active
            gradient = weights - 2.0 * C * features.T @ (targets * (1.0 - margins) * active)
            unfinished = np.linalg.norm(gradient, axis=0) > tol * reference
            if not unfinished.any():
                break
            direction = np.zeros_like(weights)
            for column in np.flatnonzero(unfinished):
                if active[:, column].sum() < dim:  # fewer active rows than features: Woodbury, n_I x n_I
                    direction[:, column] = _woodbury_direction(features[active[:, column]], C, gradient[:, column])
                else:
                    direction[:, column] = _newton_direction(gram[column], C, gradient[:, column], factors, column)
            step_margins = targets * (features @ direction)
            step = _exact_line_search(margins, step_margins, np.einsum("ij,ij->j", weights, direction),
                                      np.einsum("ij,ij->j", direction, direction), C)
            weights = weights + step * direction
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

        model = WeightedKNN(n_neighbors=int(params.get("k", 20)), temperature=float(params.get("temperature", 0.05)))
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
