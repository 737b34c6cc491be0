"""``logreg``: multinomial logistic regression (lbfgs, L2); its grid search follows one warm-started path over
increasing C per fold.
"""
from __future__ import annotations

import numpy as np

from pintopic.classify.metrics import f1_macro
from pintopic.classify.saver import Saver
from pintopic.classify.scaling import scaled_fold

LOGREG_MAX_ITER = 300
#: Below this many feature values a process pool costs more than it saves.
PARALLEL_MIN_VALUES = 2_000_000


def make_logreg(C: float, seed: int = 0):
    """Multinomial logistic regression (lbfgs, L2) with inverse regularisation ``C``."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=float(C), max_iter=LOGREG_MAX_ITER, tol=1e-4, random_state=seed)


def logreg_fold_scores(X, y_index, train, val, Cs, seed: int = 0) -> list[float]:
    """Macro-F1 on ``val`` for every C, warm-starting each fit from the previous (smaller) C."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    X_train, X_val = scaled_fold(X, train, val)
    model = make_logreg(Cs[0], seed).set_params(warm_start=True)
    scores = [0.0] * len(Cs)
    for position in np.argsort(Cs, kind="stable"):
        model.set_params(C=float(Cs[position]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X_train, y_index[train])
        scores[position] = f1_macro(y_index[val], model.predict(X_val))
    return scores


def build(params: dict, context):
    return make_logreg(params.get("C", 1.0), context.seed)


def fold_scores(X, y_index, folds, settings, context) -> np.ndarray:
    from joblib import Parallel, delayed

    Cs = [s["C"] for s in settings]
    parallel = Parallel(n_jobs=context.n_jobs if X.size >= PARALLEL_MIN_VALUES else 1)
    return np.asarray(parallel(delayed(logreg_fold_scores)(X, y_index, tr, va, Cs, context.seed) for tr, va in folds))


def _restore(model, arrays: dict):
    model.coef_, model.intercept_, model.classes_ = arrays["coef_"], arrays["intercept_"], arrays["classes_"]
    model.n_features_in_ = model.coef_.shape[1]
    model.n_iter_ = np.zeros(1, dtype=np.int32)
    return model


def _logistic(**params):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(**params)


SAVERS = {"LogisticRegression": Saver(
    cls=_logistic, params=("C", "max_iter", "tol", "random_state"),
    arrays=lambda model: {"coef_": model.coef_, "intercept_": model.intercept_, "classes_": model.classes_},
    restore=_restore)}
