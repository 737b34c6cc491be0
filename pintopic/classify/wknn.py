"""``wknn``: k-NN on cosine similarity whose votes weigh exp(similarity / T) (Wu et al. 2018; DINO's k-NN evaluation),
optionally in a PCA-whitened space. Its probabilities suit ensembles; its grid search finds each fold's
neighbours once per whitening value, for the whole k x T grid.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from pintopic.classify.lda import fitted_pca
from pintopic.classify.metrics import f1_macro
from pintopic.classify.saver import Saver
from pintopic.classify.scaling import scaled_fold

#: Most principal directions a whitening keeps.
WHITEN_MAX_COMPONENTS = 2048
#: Below this many feature values a process pool costs more than it saves.
PARALLEL_MIN_VALUES = 2_000_000


def softmax_votes(distances: np.ndarray, neighbour_labels: np.ndarray, n_classes: int, temperature: float) -> np.ndarray:
    """Class probabilities from cosine distances: each neighbour votes exp(similarity / temperature)."""
    weights = np.exp(-(distances - distances[:, :1]) / temperature)  # rows sorted: shift by the nearest, no overflow
    votes = np.zeros((len(distances), n_classes))
    np.add.at(votes, (np.repeat(np.arange(len(distances)), distances.shape[1]), neighbour_labels.ravel()), weights.ravel())
    return votes / votes.sum(axis=1, keepdims=True)


def fit_whitening(X: np.ndarray, floor: float, max_components: int = WHITEN_MAX_COMPONENTS, seed: int = 0):
    """``(mean, projection)`` of PCA whitening: ``(X - mean) @ projection`` has unit variance per direction.

    Each direction is divided by sqrt(variance + floor * largest variance); the floor keeps the many
    near-empty directions of a wide feature from being inflated to the size of the informative ones.
    """
    pca = fitted_pca(X, max_components, seed)
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
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import validate_data

        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        if self.whiten > 0 and len(X) < 2:
            raise ValueError(f"whitening needs at least 2 samples to estimate directions; got {len(X)} sample")
        mean, projection = fit_whitening(X, float(self.whiten)) if self.whiten > 0 else (None, None)
        return self.set_fitted(whitened(X, mean, projection), y, mean, projection)

    def set_fitted(self, fit_X, fit_y, mean=None, projection=None) -> WeightedKNN:
        """Fitted state from stored arrays: the (projected) training rows, their labels and the whitening."""
        from sklearn.neighbors import NearestNeighbors

        self.classes_, self.fit_y_ = np.unique(np.asarray(fit_y), return_inverse=True)
        self.fit_X_ = np.asarray(fit_X)
        self.whitening_mean_, self.whitening_ = mean, projection
        self.n_features_in_ = self.fit_X_.shape[1] if projection is None else projection.shape[0]
        self.index_ = NearestNeighbors(metric="cosine", algorithm="brute").fit(self.fit_X_)
        return self

    def predict_proba(self, X) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted, validate_data

        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        k = min(int(self.n_neighbors), len(self.fit_X_))
        distances, neighbours = self.index_.kneighbors(whitened(X, self.whitening_mean_, self.whitening_), n_neighbors=k)
        return softmax_votes(distances, self.fit_y_[neighbours], len(self.classes_), float(self.temperature))

    def predict(self, X) -> np.ndarray:
        probabilities = self.predict_proba(X)
        return self.classes_[probabilities.argmax(axis=1)]


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


def build(params: dict, context):
    return WeightedKNN(n_neighbors=int(params.get("k", 20)), temperature=float(params.get("temperature", 0.05)),
                       whiten=float(params.get("whiten", 0.0)))


def fold_scores(X, y_index, folds, settings, context) -> np.ndarray:
    from joblib import Parallel, delayed

    triples = [(s["k"], s["temperature"], s["whiten"]) for s in settings]
    parallel = Parallel(n_jobs=context.n_jobs if X.size >= PARALLEL_MIN_VALUES else 1)
    return np.asarray(parallel(delayed(wknn_fold_scores)(X, y_index, tr, va, triples) for tr, va in folds))


def _arrays(model) -> dict:
    whitening = {} if model.whitening_ is None else {"whitening_mean_": model.whitening_mean_, "whitening_": model.whitening_}
    return {"fit_X": model.fit_X_, "fit_y": model.classes_[model.fit_y_], **whitening}


SAVERS = {"WeightedKNN": Saver(
    cls=lambda **params: WeightedKNN(**params), params=("n_neighbors", "temperature", "whiten"), arrays=_arrays,
    restore=lambda model, arrays: model.set_fitted(arrays["fit_X"], arrays["fit_y"], arrays.get("whitening_mean_"),
                                                   arrays.get("whitening_")))}
