"""``lsvm``: a one-vs-rest linear SVM with LinearSVC's exact objective (squared hinge, L2, regularised intercept
with ``intercept_scaling=1``), solved by :class:`SquaredHingeSVC`: a finite Newton method whose solution path
over increasing C is warm-started, so the whole C grid costs about one LinearSVC fit.

Each class (one-vs-rest column) is its own problem, so every fold and the refit are dealt out to the
processes in blocks of classes: five folds keep two cores equally busy. CV runs at a looser gradient
tolerance than the refit.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from pintopic.classify.metrics import f1_macro
from pintopic.classify.saver import Saver
from pintopic.classify.scaling import scaled_fold

#: Below this many feature values a process pool costs more than it saves.
PARALLEL_MIN_VALUES = 2_000_000
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
                       max_iter: int = 100, columns=None, iterations: list | None = None) -> list[np.ndarray]:
    """Exact one-vs-rest L2 squared-hinge SVM weights (bias last, regularised) for each C, warm-started.

    Minimises ``0.5 |w|^2 + C sum_i max(0, 1 - y_i [x_i, 1] . w)^2`` per class (LinearSVC's problem) by
    the finite Newton method of Keerthi & DeCoste (2005): each step solves the quadratic on the current
    active set (``I + 2C X_I'X_I``, whose Gram matrix is updated only for rows that enter or leave; see
    :func:`_newton_direction`), then an exact line search. Classes are independent problems: ``columns``
    (indices into the one-vs-rest target columns, default all) solves a subset, so processes can share them.
    Returns one ``(d + 1, len(columns))`` array per C, in order; ``iterations`` (a list) receives the Newton
    steps each C took.
    """
    from threadpoolctl import threadpool_limits

    # many small BLAS calls: one thread each is much faster than two fighting for busy cores
    # (measured 40x on a loaded 2-core machine); folds run in parallel processes instead
    with threadpool_limits(limits=1, user_api="blas"):
        return _squared_hinge_path(X, y_index, n_classes, Cs, tol=tol, max_iter=max_iter, columns=columns,
                                   iterations=[] if iterations is None else iterations)


def _squared_hinge_path(X, y_index, n_classes, Cs, *, tol, max_iter, columns, iterations: list) -> list[np.ndarray]:
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
        steps = max_iter
        for iteration in range(max_iter):
            now_active[:, unfinished] = margins[:, unfinished] < 1.0
            _update_gram(gram, gram_valid, features, active, now_active, full_gram, unfinished)
            active[:, unfinished] = now_active[:, unfinished]
            slack = (1.0 - margins[:, unfinished]) * active[:, unfinished]
            gradient = weights[:, unfinished] - 2.0 * C * features.T @ (targets[:, unfinished] * slack)
            keep = np.linalg.norm(gradient, axis=0) > tol * reference[unfinished]
            unfinished, gradient = unfinished[keep], gradient[:, keep]
            if not len(unfinished):
                steps = iteration
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
        iterations.append(steps)
        path.append(weights.copy())
    return path


class SquaredHingeSVC(ClassifierMixin, BaseEstimator):
    """Linear SVM, one-vs-rest, with exactly LinearSVC's objective (see :func:`squared_hinge_path`)."""

    def __init__(self, C: float = 1.0, tol: float = 1e-7, max_iter: int = 100):
        self.C = C
        self.tol = tol
        self.max_iter = max_iter

    def fit(self, X, y) -> SquaredHingeSVC:
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import validate_data

        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        classes, y_index = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"a linear SVM needs at least two classes in the training rows; got {len(classes)} class")
        iterations: list = []
        weights = squared_hinge_path(X, y_index, len(classes), [self.C], tol=self.tol, max_iter=self.max_iter,
                                     iterations=iterations)[0]
        self.n_iter_ = iterations[0]
        return self.set_weights(weights, classes)

    def set_weights(self, weights: np.ndarray, classes) -> SquaredHingeSVC:
        """Install a solution of :func:`squared_hinge_path` (bias in the last row) as the fitted state."""
        self.classes_ = np.asarray(classes)
        self.coef_ = np.ascontiguousarray(weights[:-1].T)
        self.intercept_ = np.ascontiguousarray(weights[-1])
        self.n_features_in_ = self.coef_.shape[1]
        return self

    def decision_function(self, X) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted, validate_data

        check_is_fitted(self)
        scores = validate_data(self, X, dtype=np.float64, reset=False) @ self.coef_.T + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        index = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[index]


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




def build(params: dict, context):
    return SquaredHingeSVC(C=float(params.get("C", 1.0)))


def _jobs(X, context) -> tuple[object, int]:
    """The process pool and the number of class blocks per fold: more tasks than processes, so uneven blocks balance."""
    from joblib import Parallel

    jobs = context.n_jobs if X.size >= PARALLEL_MIN_VALUES else 1
    return Parallel(n_jobs=jobs), 2 * jobs if jobs > 1 else 1


def fold_scores(X, y_index, folds, settings, context) -> np.ndarray:
    parallel, blocks = _jobs(X, context)
    return np.asarray(lsvm_path_search(X, y_index, folds, [s["C"] for s in settings], parallel, blocks))


def refit(X, y, params: dict, settings, context):
    parallel, blocks = _jobs(X, context)
    return fit_lsvm(X, y, params["C"], [s["C"] for s in settings], parallel, blocks)


SAVERS = {"SquaredHingeSVC": Saver(
    cls=lambda **params: SquaredHingeSVC(**params), params=("C", "tol", "max_iter"),
    arrays=lambda model: {"coef_": model.coef_, "intercept_": model.intercept_, "classes_": model.classes_},
    restore=lambda model, arrays: model.set_weights(np.vstack([arrays["coef_"].T, arrays["intercept_"][None, :]]),
                                                    arrays["classes_"]))}
