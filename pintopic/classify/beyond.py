"""Classifiers beyond the study: multinomial logistic regression (``logreg``), an RBF-kernel SVM (``rbf``)
and a similarity-weighted k-NN (``wknn``).

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


class WeightedKNN(ClassifierMixin, BaseEstimator):
    """k-NN on cosine similarity whose votes weigh exp(similarity / temperature) (Wu et al. 2018, DINO's k-NN).

    A near-duplicate outvotes everything (what k = 1 is good at) while the other neighbours still give
    graded probabilities, which is what an ensemble averages.
    """

    def __init__(self, n_neighbors: int = 20, temperature: float = 0.05):
        self.n_neighbors = n_neighbors
        self.temperature = temperature

    def fit(self, X, y):
        from sklearn.neighbors import NearestNeighbors

        self.classes_, y_index = np.unique(np.asarray(y), return_inverse=True)
        self.fit_X_, self.fit_y_ = np.asarray(X), y_index
        self.n_features_in_ = self.fit_X_.shape[1]
        self.index_ = NearestNeighbors(metric="cosine", algorithm="brute").fit(self.fit_X_)
        return self

    def predict_proba(self, X) -> np.ndarray:
        k = min(int(self.n_neighbors), len(self.fit_X_))
        distances, neighbours = self.index_.kneighbors(np.asarray(X), n_neighbors=k)
        return softmax_votes(distances, self.fit_y_[neighbours], len(self.classes_), float(self.temperature))

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def wknn_fold_scores(X, y_index, train, val, settings) -> list[float]:
    """Macro-F1 on ``val`` for every (k, temperature), from one neighbour search at the largest k."""
    from sklearn.neighbors import NearestNeighbors

    X_train, X_val = scaled_fold(X, train, val)
    n_classes = int(y_index.max()) + 1
    largest = min(max(k for k, _ in settings), len(train))
    distances, neighbours = NearestNeighbors(metric="cosine", algorithm="brute").fit(X_train).kneighbors(
        X_val, n_neighbors=largest)
    labels = y_index[train][neighbours]
    return [f1_macro(y_index[val], softmax_votes(distances[:, :k], labels[:, :k], n_classes, t).argmax(axis=1))
            for k, t in settings]


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
    """``(settings, scores (folds x settings))`` for ``logreg``, ``rbf`` or ``wknn``, folds in parallel."""
    from joblib import Parallel, delayed

    settings = grid_settings(grid)
    parallel = Parallel(n_jobs=n_jobs if X.size >= PARALLEL_MIN_VALUES else 1)
    if name == "logreg":
        Cs = [s["C"] for s in settings]
        per_fold = parallel(delayed(logreg_fold_scores)(X, y_index, tr, va, Cs, seed) for tr, va in folds)
    elif name == "wknn":
        pairs = [(s["k"], s["temperature"]) for s in settings]
        per_fold = parallel(delayed(wknn_fold_scores)(X, y_index, tr, va, pairs) for tr, va in folds)
    else:
        pairs = [(s["C"], s["gamma"]) for s in settings]
        per_fold = parallel(delayed(rbf_fold_scores)(X, y_index, tr, va, pairs, seed) for tr, va in folds)
    return settings, np.asarray(per_fold, dtype=np.float64)
