"""Training through the noise: a way of treating suspect pins, chosen by cross-validation on the training part.

Options, all with the same classifier (a logistic regression on the principal directions of
:mod:`pintopic.classify.oof`, regularised by :data:`CLASSIFIER_ALPHA` per training pin):

- ``none``: the given labels as they are (the noisy baseline);
- ``drop``: leave the flagged pins out;
- ``weight``: weigh every pin by the board-aware probability that its given label is right;
- ``relabel``: give the flagged pins the suggested label;
- ``cleanlearning``: cleanlab's :class:`~cleanlab.classification.CleanLearning` (its own pruning and
  class re-weighting) on the same board-grouped out-of-fold probabilities;
- ``posterior``: train on soft labels, every pin's posterior over its category from the board mixture,
  refined by EM rounds (:mod:`pintopic.classify.soft_labels`), with a class balance from :data:`BALANCES`.

What an option learns from (flags, soft labels) is computed from out-of-fold probabilities whose folds are
grouped by board. The choice is nested: for each fold, flags and soft labels are recomputed from the other
folds alone (their own folds: the remaining ones), the option is fitted on them and scored with macro-F1 on
the held-out fold's given labels, which no option touches and which did not shape its training labels
(flags computed once on all training pins would have seen them and favour pruning: measured). The option
with the best mean wins and is refitted on the whole training part. The test part is never cleaned or
relabelled.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from pintopic.classify.metrics import f1_macro
from pintopic.classify.oof import (
    assemble,
    fit_basis,
    fit_head,
    out_of_fold,
    probabilities,
    probability_head,
    project,
)

OPTIONS = ("none", "drop", "weight", "relabel", "cleanlearning", "posterior")
#: Class balances ``posterior`` is tried with (0: none; 0.5: weights by the inverse square root of class mass).
BALANCES = (0.0, 0.5)
#: Regularisation per training row of the classifier trained through the noise (C = 0.05 for 5,000 pins;
#: the flagging head is held five times stronger).
CLASSIFIER_ALPHA = 0.004
#: The smallest weight ``weight`` gives a pin (a weight of 0 would be ``drop``).
MIN_WEIGHT = 0.05


@dataclass
class Treatment:
    """What one option does to the training pins: which to keep, with which labels (class indices, or soft
    labels ``(n, K)``) and weights."""

    keep: np.ndarray
    labels: np.ndarray
    weights: np.ndarray | None = None


@dataclass
class Evidence:
    """What the options learn from, computed from the training rows' own board-grouped folds."""

    pred_probs: np.ndarray  # out-of-fold probabilities of the flagging head
    issues: object  # flag_label_issues' frame
    soft: dict  # balance -> (soft labels, info) for ``posterior``


def candidates(options) -> list[tuple[str, float]]:
    """``(option, balance)`` pairs the CV compares: ``posterior`` once per balance, the others once."""
    return [(option, balance) for option in options for balance in (BALANCES if option == "posterior" else (0.0,))]


def gather_evidence(Z, given, boards, users, folds, classes, *, balances=(), method: str | None = None,
                    seed: int = 0, n_jobs: int = 1) -> Evidence:
    """Out-of-fold probabilities, flags and (for each of ``balances``) soft labels of the rows ``Z``."""
    from pintopic.classify.label_issues import DEFAULT_METHOD, flag_label_issues
    from pintopic.classify.soft_labels import soft_labels

    given = np.asarray(given)
    pred_probs = out_of_fold(Z, given, folds, classes, seed=seed, n_jobs=n_jobs)
    issues = flag_label_issues(pred_probs, given, boards, users, method=method or DEFAULT_METHOD)
    soft = {balance: soft_labels(Z, given, boards, users, folds, classes, pred_probs=pred_probs, balance=balance, seed=seed,
                                 temperature=issues.attrs["temperature"])
            for balance in balances}
    return Evidence(pred_probs, issues, soft)


def treatment(option: str, given: np.ndarray, evidence: Evidence | None, balance: float = 0.0) -> Treatment:
    """The training pins as ``option`` treats them."""
    everyone = np.ones(len(given), dtype=bool)
    if option == "none" or evidence is None:
        return Treatment(everyone, given)
    if option == "posterior":
        return Treatment(everyone, evidence.soft[balance][0])
    flagged = evidence.issues["flagged"].to_numpy()
    if option == "drop":
        return Treatment(~flagged, given)
    if option == "weight":
        return Treatment(everyone, given, np.clip(1 - evidence.issues["score"].to_numpy(), MIN_WEIGHT, 1.0))
    if option == "relabel":
        return Treatment(everyone, np.where(flagged, evidence.issues["suggested"].to_numpy(), given))
    return Treatment(everyone, given)


def fit_option(option: str, Z, given, evidence: Evidence | None, *, balance: float = 0.0, seed: int = 0,
               alpha: float = CLASSIFIER_ALPHA):
    """The head fitted on projected rows ``Z`` as ``option`` treats the pins. A treatment that would leave a
    single class to learn falls back to the given labels."""
    head = probability_head(seed, alpha, n_rows=len(given))
    given = np.asarray(given)
    plan = treatment(option, given, evidence, balance)
    if plan.labels.ndim == 1 and len(np.unique(plan.labels[plan.keep])) < 2:
        plan = treatment("none", given, evidence)
    elif option == "cleanlearning":
        cleaned = _clean_learning(head, Z, given, evidence.pred_probs, seed)
        if cleaned is not None:
            return cleaned
    weights = None if plan.weights is None else plan.weights[plan.keep]
    return fit_head(head, Z[plan.keep], plan.labels[plan.keep], sample_weight=weights, alpha=alpha, balance=balance)


def _clean_learning(head, Z, given, pred_probs, seed: int):
    """cleanlab's CleanLearning's classifier, or None when its pruning leaves one class."""
    from cleanlab.classification import CleanLearning

    from pintopic.classify.oof import single_thread_blas

    with single_thread_blas(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="When X and pred_probs are both provided")
        learner = CleanLearning(head, seed=seed, verbose=False, find_label_issues_kwargs={"n_jobs": 1})
        try:
            return learner.fit(Z, given, pred_probs=pred_probs).clf
        except ValueError as error:
            if "only one class" not in str(error):
                raise
    return None


def inner_folds(folds, index: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The folds other than ``folds[index]``, as folds of its training rows (positions within them)."""
    train = folds[index][0]
    position = np.full(max(int(train.max()), max(int(v.max()) for _, v in folds)) + 1, -1)
    position[train] = np.arange(len(train))
    others = [val for j, (_, val) in enumerate(folds) if j != index]
    return [(position[np.setdiff1d(train, val)], position[val]) for val in others]


def _candidates_fold(Z, given, boards, users, folds, index, classes, pairs, method, seed) -> list[np.ndarray]:
    """Probabilities on fold ``index`` of every ``(option, balance)`` in ``pairs``, each fitted on the other folds
    with flags and soft labels computed from those folds alone."""
    train, val = folds[index]
    balances = sorted({balance for option, balance in pairs if option == "posterior"})
    evidence = gather_evidence(Z[train], given[train], boards[train], None if users is None else users[train],
                               inner_folds(folds, index), classes, balances=balances, method=method, seed=seed)
    return [probabilities(fit_option(option, Z[train], given[train], evidence, balance=balance, seed=seed), Z[val], classes)
            for option, balance in pairs]


def choose_option(X, given, boards, users, folds, classes, *, options=OPTIONS, method: str | None = None,
                  seed: int = 0, n_jobs: int = 2) -> dict:
    """Cross-validate every option on the training part ``X`` (``given``: class indices into ``classes``).

    Returns ``cv`` (option -> mean macro-F1 on the held-out folds' given labels, ``posterior`` at its best
    balance), ``cv_folds``, ``chosen``, ``balance`` (``posterior``'s chosen one), ``balances_cv``, ``model``
    (a Pipeline on raw features: the chosen option refitted on every training pin), ``basis``, ``evidence``
    (the training pins' flags and, for ``posterior``, soft labels) and ``oof`` (the chosen option's
    held-out probabilities of the training pins).
    """
    from joblib import Parallel, delayed

    given, classes, boards = np.asarray(given), np.asarray(classes), np.asarray(boards)
    pairs = candidates(options)
    basis = fit_basis(X, seed)
    Z = project(basis, X)
    per_fold = Parallel(n_jobs=max(1, min(n_jobs, len(folds))))(
        delayed(_candidates_fold)(Z, given, boards, users, folds, index, classes, pairs, method, seed)
        for index in range(len(folds)))
    scores = np.array([[f1_macro(given[val], classes[probs.argmax(axis=1)]) for probs in fold]
                       for (_, val), fold in zip(folds, per_fold)])  # (folds, candidates)
    means = scores.mean(axis=0)
    best = max(range(len(pairs)), key=lambda i: (means[i], -i))
    chosen, balance = pairs[best]
    evidence = gather_evidence(Z, given, boards, users, folds, classes, balances=(balance,) if chosen == "posterior" else (),
                               method=method, seed=seed, n_jobs=n_jobs)
    head = fit_option(chosen, Z, given, evidence, balance=balance, seed=seed)
    oof = np.zeros((len(given), len(classes)))
    for (_, val), fold in zip(folds, per_fold):
        oof[val] = fold[best]
    return {**_cv_summary(pairs, scores, options), "chosen": chosen, "balance": balance if chosen == "posterior" else None,
            "model": assemble(basis, head), "basis": basis, "evidence": evidence, "oof": oof}


def _cv_summary(pairs, scores: np.ndarray, options) -> dict:
    """``cv`` and ``cv_folds`` per option (each at its best setting) and ``balances_cv`` (``posterior`` per balance)."""
    means = scores.mean(axis=0)
    best = {option: max((i for i, pair in enumerate(pairs) if pair[0] == option), key=lambda i: (means[i], -i))
            for option in options}
    return {"cv": {option: float(means[i]) for option, i in best.items()},
            "cv_folds": {option: scores[:, i].tolist() for option, i in best.items()},
            "balances_cv": {str(balance): float(means[i]) for i, (option, balance) in enumerate(pairs) if option == "posterior"}}
