"""Training through the noise: a way of treating suspect pins, chosen by cross-validation on the training part.

Options, all with the same classifier (a logistic regression on the principal directions of
:mod:`pintopic.classify.oof`, regularised by :data:`CLASSIFIER_ALPHA` per training pin):

- ``none``: the given labels as they are (the noisy baseline);
- ``drop``: leave the flagged pins out;
- ``weight``: weigh every pin by the board-aware probability that its given label is right;
- ``relabel``: give the flagged pins the suggested label;
- ``cleanlearning``: cleanlab's :class:`~cleanlab.classification.CleanLearning` (its own pruning and
  class re-weighting) on the same board-grouped out-of-fold probabilities.

Flags come from out-of-fold probabilities of the training part only (folds grouped by board). Each option is
then scored by the same folds: fitted on the other folds' pins (treated as the flags say), scored with macro-F1
on the held-out fold's given labels, which no option touches. The option with the best mean wins and is refitted
on the whole training part. The test part is never cleaned or relabelled.
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
    probability_head,
    project,
)

OPTIONS = ("none", "drop", "weight", "relabel", "cleanlearning")
#: Regularisation per training row of the classifier trained through the noise (C = 0.05 for 5,000 pins;
#: the flagging head is held five times stronger).
CLASSIFIER_ALPHA = 0.004
#: The smallest weight ``weight`` gives a pin (a weight of 0 would be ``drop``).
MIN_WEIGHT = 0.05


@dataclass
class Treatment:
    """What one option does to the training pins: which to keep, with which labels and weights."""

    keep: np.ndarray
    labels: np.ndarray
    weights: np.ndarray | None = None


def treatment(option: str, given: np.ndarray, issues) -> Treatment:
    """The training pins as ``option`` treats them, from :func:`~pintopic.classify.label_issues.flag_label_issues` output."""
    flagged = issues["flagged"].to_numpy()
    everyone = np.ones(len(given), dtype=bool)
    if option == "drop":
        return Treatment(~flagged, given)
    if option == "weight":
        return Treatment(everyone, given, np.clip(1 - issues["score"].to_numpy(), MIN_WEIGHT, 1.0))
    if option == "relabel":
        return Treatment(everyone, np.where(flagged, issues["suggested"].to_numpy(), given))
    return Treatment(everyone, given)


def fit_option(option: str, Z, given, issues, pred_probs, *, seed: int = 0, alpha: float = CLASSIFIER_ALPHA):
    """The head fitted on projected rows ``Z`` as ``option`` treats the pins (``pred_probs``: out-of-fold
    probabilities). A treatment that would leave a single class to learn falls back to the given labels."""
    head = probability_head(seed, alpha, n_rows=len(given))
    given = np.asarray(given)
    plan = treatment(option, given, issues)
    if len(np.unique(plan.labels[plan.keep])) < 2:
        plan = treatment("none", given, issues)
    elif option == "cleanlearning":
        from cleanlab.classification import CleanLearning

        from pintopic.classify.oof import single_thread_blas

        with single_thread_blas(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="When X and pred_probs are both provided")
            learner = CleanLearning(head, seed=seed, verbose=False, find_label_issues_kwargs={"n_jobs": 1})
            try:
                return learner.fit(Z, given, pred_probs=pred_probs).clf
            except ValueError as error:  # its pruning left one class: learn from the given labels instead
                if "only one class" not in str(error):
                    raise
    weights = None if plan.weights is None else plan.weights[plan.keep]
    return fit_head(head, Z[plan.keep], plan.labels[plan.keep], sample_weight=weights, alpha=alpha)


def _option_fold(Z, given, issues, pred_probs, train, val, options, classes, seed: int) -> list[np.ndarray]:
    """Probabilities on fold ``val`` of every option fitted on fold ``train``."""
    from pintopic.classify.oof import probabilities

    part = issues.iloc[train].reset_index(drop=True)
    return [probabilities(fit_option(option, Z[train], given[train], part, pred_probs[train], seed=seed), Z[val], classes)
            for option in options]


def choose_option(X, given, boards, users, folds, classes, *, options=OPTIONS, method: str | None = None,
                  seed: int = 0, n_jobs: int = 2) -> dict:
    """Cross-validate every option on the training part ``X`` (``given``: class indices into ``classes``).

    Returns ``cv`` (option -> mean macro-F1 on the held-out folds' given labels), ``cv_folds``, ``chosen``,
    ``model`` (a Pipeline on raw features: the chosen option refitted on every training pin), ``issues``
    (the training pins' flags), ``pred_probs`` (their out-of-fold probabilities, flagging model) and
    ``oof`` (the chosen option's out-of-fold probabilities of the training pins).
    """
    from joblib import Parallel, delayed

    from pintopic.classify.label_issues import DEFAULT_METHOD, flag_label_issues

    given, options, classes = np.asarray(given), list(options), np.asarray(classes)
    basis = fit_basis(X, seed)
    Z = project(basis, X)
    pred_probs = out_of_fold(Z, given, folds, classes, seed=seed, n_jobs=n_jobs)
    issues = flag_label_issues(pred_probs, given, boards, users, method=method or DEFAULT_METHOD)
    per_fold = Parallel(n_jobs=max(1, min(n_jobs, len(folds))))(
        delayed(_option_fold)(Z, given, issues, pred_probs, train, val, options, classes, seed) for train, val in folds)
    scores = np.array([[f1_macro(given[val], classes[probs.argmax(axis=1)]) for probs in fold]
                       for (_, val), fold in zip(folds, per_fold)])  # (folds, options)
    cv = {option: float(scores[:, i].mean()) for i, option in enumerate(options)}
    chosen = max(options, key=lambda option: (cv[option], -options.index(option)))
    oof = np.zeros((len(given), len(classes)))
    for (_, val), fold in zip(folds, per_fold):
        oof[val] = fold[options.index(chosen)]
    head = fit_option(chosen, Z, given, issues, pred_probs, seed=seed)
    return {"cv": cv, "cv_folds": {option: scores[:, i].tolist() for i, option in enumerate(options)},
            "chosen": chosen, "model": assemble(basis, head), "basis": basis, "issues": issues, "pred_probs": pred_probs,
            "oof": oof}
