"""Ensembles: the average of several backbone x classifier pairs' class probabilities.

Members are chosen by greedy forward selection (Caruana et al., 2004) on out-of-fold probabilities of
the training part only: each candidate is refitted on every CV fold's training rows and predicts that
fold's validation rows; a candidate joins while it raises the macro-F1 of the averaged probabilities.
Test labels are never an input: :func:`fit_ensemble` sees the test features only, to predict them.
Only classifiers with probabilities (``predict_proba``: logreg, knn, nn, zeroshot) are candidates, so
every member speaks the same calibrated scale.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROBABILISTIC = ("logreg", "knn", "nn", "zeroshot")
MAX_MEMBERS = 5


@dataclass
class Candidate:
    """One backbone x classifier pair with its chosen hyper-parameters and its features (train and test rows)."""

    label: str  # e.g. "lite0+lite1 / logreg"
    classifier: str
    params: dict
    X_train: np.ndarray
    X_test: np.ndarray
    model: object = None  # the pair's model already refitted on all training rows (reused, not refitted)
    metric: str = "euclidean"


def _f1_macro(y_true, y_pred) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="macro"))


def _aligned_probabilities(model, X, classes) -> np.ndarray:
    """``predict_proba`` columns reordered to ``classes`` (a fold may lack a rare class: its column is 0)."""
    probabilities = model.predict_proba(X)
    out = np.zeros((len(X), len(classes)))
    index = {c: i for i, c in enumerate(classes)}
    for column, c in enumerate(model.classes_):
        out[:, index[c]] = probabilities[:, column]
    return out


def out_of_fold_probabilities(candidate: Candidate, y_train, folds, classes, *, seed: int = 0) -> np.ndarray:
    """(n_train x K) probabilities, each row predicted by a model that did not see it."""
    from sklearn.base import clone

    from pintopic.classify.estimators import build_classifier

    y_train = np.asarray(y_train)
    oof = np.zeros((len(y_train), len(classes)))
    for train, val in folds:
        if candidate.classifier == "zeroshot":
            model = candidate.model  # not fitted on any row: its out-of-fold predictions are its predictions
        else:
            model = build_classifier(candidate.classifier, candidate.params, metric=candidate.metric, seed=seed,
                                     n_samples=len(train), n_classes=len(np.unique(y_train[train])),
                                     n_features=candidate.X_train.shape[1])
            model = clone(model).fit(candidate.X_train[train], y_train[train])
        oof[val] = _aligned_probabilities(model, candidate.X_train[val], classes)
    return oof


def select_members(oof: list[np.ndarray], y_train, classes, max_members: int = MAX_MEMBERS) -> tuple[list[int], float]:
    """Greedy forward selection without repeats: ``(member indices, CV macro-F1 of their average)``."""
    y_train = np.asarray(y_train)
    chosen: list[int] = []
    best = -1.0
    total = np.zeros_like(oof[0])
    while len(chosen) < min(max_members, len(oof)):
        trials = [(_f1_macro(y_train, classes[(total + oof[i]).argmax(axis=1)]), -i) for i in range(len(oof))
                  if i not in chosen]
        score, negative = max(trials)
        if score <= best:
            break
        chosen.append(-negative)
        total += oof[-negative]
        best = score
    return chosen, best


def fit_ensemble(candidates: list[Candidate], y_train, folds, *, seed: int = 0, max_members: int = MAX_MEMBERS) -> dict:
    """Choose members by CV on the training rows; return members, CV macro-F1 and test probabilities/predictions."""
    from sklearn.base import clone

    from pintopic.classify.estimators import build_classifier

    candidates = [c for c in candidates if c.classifier in PROBABILISTIC]
    if not candidates:
        raise ValueError("an ensemble needs candidates with probabilities (logreg, knn, nn, zeroshot)")
    y_train = np.asarray(y_train).astype(str)
    classes = np.unique(y_train)
    oof = [out_of_fold_probabilities(c, y_train, folds, classes, seed=seed) for c in candidates]
    members, cv_f1 = select_members(oof, y_train, classes, max_members)
    test_probabilities = np.zeros((len(candidates[0].X_test), len(classes)))
    for i in members:
        model = candidates[i].model
        if model is None:
            model = clone(build_classifier(candidates[i].classifier, candidates[i].params, metric=candidates[i].metric,
                                           seed=seed, n_samples=len(y_train), n_classes=len(classes),
                                           n_features=candidates[i].X_train.shape[1])).fit(candidates[i].X_train, y_train)
        test_probabilities += _aligned_probabilities(model, candidates[i].X_test, classes)
    test_probabilities /= len(members)
    return {"members": [candidates[i].label for i in members], "cv_f1_macro": cv_f1, "classes": classes,
            "candidates": [c.label for c in candidates],
            "candidate_cv_f1_macro": {c.label: _f1_macro(y_train, classes[o.argmax(axis=1)]) for c, o in zip(candidates, oof)},
            "test_probabilities": test_probabilities, "test_predictions": classes[test_probabilities.argmax(axis=1)]}
