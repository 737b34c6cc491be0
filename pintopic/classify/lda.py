"""``lda``: shrinkage linear discriminant analysis on the top principal directions (a Gaussian-class model: another
view for ensembles), saved as one linear map; its grid search shares one PCA per fold.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from pintopic.classify.metrics import f1_macro
from pintopic.classify.saver import Saver
from pintopic.classify.scaling import scaled_fold

#: The PCA size under the discriminant analysis.
LDA_COMPONENTS = 512
#: Below this many feature values a process pool costs more than it saves.
PARALLEL_MIN_VALUES = 2_000_000


def fitted_pca(X: np.ndarray, most: int, seed: int):
    """A PCA of ``X`` with at most ``most`` directions (fewer when rows or features run out)."""
    from sklearn.decomposition import PCA

    return PCA(n_components=max(1, min(int(most), X.shape[0] - 1, X.shape[1])), random_state=seed).fit(X)


class ShrinkageLDA(ClassifierMixin, BaseEstimator):
    """Linear discriminant analysis with a shrunk shared covariance, fitted on the top principal directions.

    Where logistic regression fits each boundary freely, LDA models every class as a Gaussian with one
    shared (shrunk) covariance: a different bias, hence a useful ensemble member. The PCA first keeps
    the covariance small enough to estimate (``n_components``); the fitted model is one linear map
    (``coef_``, ``intercept_``) and its probabilities are the softmax of the discriminants.
    """

    def __init__(self, shrinkage: float = 0.3, n_components: int = LDA_COMPONENTS, random_state: int = 0):
        self.shrinkage = shrinkage
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, X, y):
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import validate_data

        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        if len(np.unique(y)) < 2:
            raise ValueError("shrinkage LDA needs at least two classes in the training rows; got 1 class")
        pca = fitted_pca(X, self.n_components, self.random_state)
        lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=float(self.shrinkage)).fit(pca.transform(X), y)
        coef = pca.components_.T @ lda.coef_.T  # (features, 1 or classes)
        intercept = lda.intercept_ - pca.mean_ @ coef
        if coef.shape[1] == 1:  # two classes: sklearn keeps one discriminant; softmax of (-f/2, f/2) is its sigmoid
            coef, intercept = np.hstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
        return self.set_weights(coef.T, intercept, lda.classes_)

    def set_weights(self, coef, intercept, classes) -> ShrinkageLDA:
        self.coef_, self.intercept_, self.classes_ = np.asarray(coef), np.asarray(intercept), np.asarray(classes)
        self.n_features_in_ = self.coef_.shape[1]
        return self

    def _discriminants(self, X) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted, validate_data

        check_is_fitted(self)
        return validate_data(self, X, dtype=[np.float64, np.float32], reset=False) @ self.coef_.T + self.intercept_

    def decision_function(self, X) -> np.ndarray:
        """One column per class; for two classes scikit-learn's convention, the second class's margin."""
        scores = self._discriminants(X)
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores

    def predict_proba(self, X) -> np.ndarray:
        from scipy.special import softmax

        return softmax(self._discriminants(X), axis=1)

    def predict(self, X) -> np.ndarray:
        discriminants = self._discriminants(X)
        return self.classes_[discriminants.argmax(axis=1)]


def lda_fold_scores(X, y_index, train, val, shrinkages, seed: int = 0) -> list[float]:
    """Macro-F1 on ``val`` for every shrinkage, sharing one PCA of the fold."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    X_train, X_val = scaled_fold(X, train, val)
    pca = fitted_pca(X_train, LDA_COMPONENTS, seed)
    Z_train, Z_val = pca.transform(X_train), pca.transform(X_val)
    return [f1_macro(y_index[val], LinearDiscriminantAnalysis(solver="eigen", shrinkage=float(s))
                     .fit(Z_train, y_index[train]).predict(Z_val)) for s in shrinkages]


def build(params: dict, context):
    return ShrinkageLDA(shrinkage=float(params.get("shrinkage", 0.3)), random_state=context.seed)


def fold_scores(X, y_index, folds, settings, context) -> np.ndarray:
    from joblib import Parallel, delayed

    shrinkages = [s["shrinkage"] for s in settings]
    parallel = Parallel(n_jobs=context.n_jobs if X.size >= PARALLEL_MIN_VALUES else 1)
    return np.asarray(parallel(delayed(lda_fold_scores)(X, y_index, tr, va, shrinkages, context.seed) for tr, va in folds))


SAVERS = {"ShrinkageLDA": Saver(
    cls=lambda **params: ShrinkageLDA(**params), params=("shrinkage", "n_components", "random_state"),
    arrays=lambda model: {"coef_": model.coef_, "intercept_": model.intercept_, "classes_": model.classes_},
    restore=lambda model, arrays: model.set_weights(arrays["coef_"], arrays["intercept_"], arrays["classes_"]))}
