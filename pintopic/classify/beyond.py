"""Classifiers beyond the study: multinomial logistic regression (``logreg``), an RBF-kernel SVM (``rbf``),
a similarity-weighted k-NN (``wknn``, optionally in a PCA-whitened space) and shrinkage linear
discriminant analysis on a PCA projection (``lda``).

All sit behind the same StandardScaler as the study's three. Their grid searches are fast in the same
spirit as :mod:`pintopic.classify.search`: ``logreg`` follows one warm-started path over increasing C per
fold; ``rbf`` computes each fold's squared distances once, and every (gamma, C) pair is then an SVM on a
precomputed kernel. ``gamma`` is given in units of 1/n_features, i.e. ``gamma=1`` is scikit-learn's
``gamma="scale"`` on standardised features, so one grid fits every feature width.
"""
from __future__ import annotations

import itertools

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from pintopic.classify.metrics import f1_macro
from pintopic.classify.search import PARALLEL_MIN_VALUES, scaled_fold

LOGREG_MAX_ITER = 300


def softmax_votes(distances: np.ndarray, neighbour_labels: np.ndarray, n_classes: int, temperature: float) -> np.ndarray:
    """Class probabilities from cosine distances: each neighbour votes exp(similarity / temperature)."""
    weights = np.exp(-(distances - distances[:, :1]) / temperature)  # rows sorted: shift by the nearest, no overflow
    votes = np.zeros((len(distances), n_classes))
    np.add.at(votes, (np.repeat(np.arange(len(distances)), distances.shape[1]), neighbour_labels.ravel()), weights.ravel())
    return votes / votes.sum(axis=1, keepdims=True)


#: Most principal directions a ``wknn`` whitening keeps, and the PCA size under ``lda``.
WHITEN_MAX_COMPONENTS = 2048
LDA_COMPONENTS = 512


def _pca(X: np.ndarray, most: int, seed: int):
    """A PCA of ``X`` with at most ``most`` directions (fewer when rows or features run out)."""
    from sklearn.decomposition import PCA

    return PCA(n_components=max(1, min(int(most), X.shape[0] - 1, X.shape[1])), random_state=seed).fit(X)


def fit_whitening(X: np.ndarray, floor: float, max_components: int = WHITEN_MAX_COMPONENTS, seed: int = 0):
    """``(mean, projection)`` of PCA whitening: ``(X - mean) @ projection`` has unit variance per direction.

    Each direction is divided by sqrt(variance + floor * largest variance); the floor keeps the many
    near-empty directions of a wide feature from being inflated to the size of the informative ones.
    """
    pca = _pca(X, max_components, seed)
    variances = pca.explained_variance_
    scale = np.sqrt(variances + floor * variances[0])
    return pca.mean_.astype(np.float32), (pca.components_.T / scale).astype(np.float32)


def whitened(X, mean, projection) -> np.ndarray:
    """Rows of ``X`` in the whitened space of :func:`fit_whitening` (unchanged when ``projection`` is None)."""
    return np.asarray(X) if projection is None else (np.asarray(X, dtype=np.float32) - mean) @ projection


class WeightedKNN(ClassifierMixin, BaseEstimator):
    """k-NN on cosine similarity whose votes weigh exp(similarity / temperature) (Wu et al. 2018, DINO's k-NN).

    A near-duplicate outvotes everything (what k = 1 is good at) while the other neighbours still give
    graded probabilities, which is what an ensemble averages. ``whiten > 0`` first PCA-whitens the
    features (``whiten`` is the variance floor, relative to the largest), so that correlated feature
    blocks, e.g. of fused backbones, stop dominating the similarity (Jegou & Chum 2012).
    """

    def __init__(self, n_neighbors: int = 20, temperature: float = 0.05, whiten: float = 0.0):
        self.n_neighbors = n_neighbors
        self.temperature = temperature
        self.whiten = whiten

    def fit(self, X, y):
        X = np.asarray(X)
        mean, projection = fit_whitening(X, float(self.whiten)) if self.whiten > 0 else (None, None)
        return self.set_fitted(whitened(X, mean, projection), y, mean, projection)

    def set_fitted(self, fit_X, fit_y, mean=None, projection=None) -> "WeightedKNN":
        """Fitted state from stored arrays: the (projected) training rows, their labels and the whitening."""
        from sklearn.neighbors import NearestNeighbors

        self.classes_, self.fit_y_ = np.unique(np.asarray(fit_y), return_inverse=True)
        self.fit_X_ = np.asarray(fit_X)
        self.whitening_mean_, self.whitening_ = mean, projection
        self.n_features_in_ = self.fit_X_.shape[1] if projection is None else projection.shape[0]
        self.index_ = NearestNeighbors(metric="cosine", algorithm="brute").fit(self.fit_X_)
        return self

    def predict_proba(self, X) -> np.ndarray:
        k = min(int(self.n_neighbors), len(self.fit_X_))
        distances, neighbours = self.index_.kneighbors(whitened(X, self.whitening_mean_, self.whitening_), n_neighbors=k)
        return softmax_votes(distances, self.fit_y_[neighbours], len(self.classes_), float(self.temperature))

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


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

        X = np.asarray(X)
        pca = _pca(X, self.n_components, self.random_state)
        lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=float(self.shrinkage)).fit(pca.transform(X), y)
        coef = pca.components_.T @ lda.coef_.T  # (features, 1 or classes)
        intercept = lda.intercept_ - pca.mean_ @ coef
        if coef.shape[1] == 1:  # two classes: sklearn keeps one discriminant; softmax of (-f/2, f/2) is its sigmoid
            coef, intercept = np.hstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
        return self.set_weights(coef.T, intercept, lda.classes_)

    def set_weights(self, coef, intercept, classes) -> "ShrinkageLDA":
        self.coef_, self.intercept_, self.classes_ = np.asarray(coef), np.asarray(intercept), np.asarray(classes)
        self.n_features_in_ = self.coef_.shape[1]
        return self

    def decision_function(self, X) -> np.ndarray:
        return np.asarray(X) @ self.coef_.T + self.intercept_

    def predict_proba(self, X) -> np.ndarray:
        from scipy.special import softmax

        return softmax(self.decision_function(X), axis=1)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]


def wknn_fold_scores(X, y_index, train, val, settings) -> list[float]:
    """Macro-F1 on ``val`` for every (k, temperature, whiten): one neighbour search per whitening, at the largest k."""
    from sklearn.neighbors import NearestNeighbors

    X_train, X_val = scaled_fold(X, train, val)
    n_classes = int(y_index.max()) + 1
    largest = min(max(k for k, *_ in settings), len(train))
    scores = {}
    for whiten in dict.fromkeys(float(w) for *_, w in settings):
        if whiten > 0:
            mean, projection = fit_whitening(X_train, whiten)
            fit, query = whitened(X_train, mean, projection), whitened(X_val, mean, projection)
        else:
            fit, query = X_train, X_val
        distances, neighbours = NearestNeighbors(metric="cosine", algorithm="brute").fit(fit).kneighbors(
            query, n_neighbors=largest)
        labels = y_index[train][neighbours]
        for k, t, w in settings:
            if float(w) == whiten:
                scores[k, t, w] = f1_macro(y_index[val], softmax_votes(distances[:, :k], labels[:, :k], n_classes, t).argmax(axis=1))
    return [scores[setting] for setting in settings]


def lda_fold_scores(X, y_index, train, val, shrinkages, seed: int = 0) -> list[float]:
    """Macro-F1 on ``val`` for every shrinkage, sharing one PCA of the fold."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    X_train, X_val = scaled_fold(X, train, val)
    pca = _pca(X_train, LDA_COMPONENTS, seed)
    Z_train, Z_val = pca.transform(X_train), pca.transform(X_val)
    return [f1_macro(y_index[val], LinearDiscriminantAnalysis(solver="eigen", shrinkage=float(s))
                     .fit(Z_train, y_index[train]).predict(Z_val)) for s in shrinkages]


def make_logreg(C: float, seed: int = 0):
    """Multinomial logistic regression (lbfgs, L2) with inverse regularisation ``C``."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=float(C), max_iter=LOGREG_MAX_ITER, tol=1e-4, random_state=seed)


def make_rbf(C: float, gamma: float, n_features: int | None, seed: int = 0):
    """RBF-kernel SVC (one-vs-rest decision scores); ``gamma`` relative to 1/n_features."""
    from sklearn.svm import SVC

    absolute = float(gamma) / n_features if n_features else "scale"
    return SVC(C=float(C), kernel="rbf", gamma=absolute, decision_function_shape="ovr", random_state=seed)


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


def grid_settings(grid: dict) -> list[dict]:
    """Every combination of a (possibly multi-parameter) grid, parameters in sorted order, gamma outermost."""
    names = sorted(grid, key=lambda name: (name != "gamma", name))
    return [dict(zip(names, values)) for values in itertools.product(*(list(grid[n]) for n in names))]


def fold_scores(name: str, X, y_index, folds, grid: dict, *, seed: int, n_jobs: int):
    """``(settings, scores (folds x settings))`` for ``logreg``, ``rbf``, ``wknn`` or ``lda``, folds in parallel."""
    from joblib import Parallel, delayed

    settings = grid_settings(grid)
    parallel = Parallel(n_jobs=n_jobs if X.size >= PARALLEL_MIN_VALUES else 1)
    if name == "logreg":
        Cs = [s["C"] for s in settings]
        per_fold = parallel(delayed(logreg_fold_scores)(X, y_index, tr, va, Cs, seed) for tr, va in folds)
    elif name == "wknn":
        triples = [(s["k"], s["temperature"], s["whiten"]) for s in settings]
        per_fold = parallel(delayed(wknn_fold_scores)(X, y_index, tr, va, triples) for tr, va in folds)
    elif name == "lda":
        shrinkages = [s["shrinkage"] for s in settings]
        per_fold = parallel(delayed(lda_fold_scores)(X, y_index, tr, va, shrinkages, seed) for tr, va in folds)
    else:
        pairs = [(s["C"], s["gamma"]) for s in settings]
        per_fold = parallel(delayed(rbf_fold_scores)(X, y_index, tr, va, pairs, seed) for tr, va in folds)
    return settings, np.asarray(per_fold, dtype=np.float64)
