"""The one catalog of classifiers: a name -> how to build it, its default grid, how its grid is scored on CV folds,
whether it has probabilities (an ensemble may average it) and how it is saved.

Every other place (grid search, evaluate, ensembles, persistence, tables, the CLI's choices) asks this
catalog, so adding a classifier is one :class:`Entry` here and one module implementing it. Implementations
are referenced by ``"module:attribute"`` and imported on first use, so reading the catalog (e.g. the
grids, on a rerun that fits nothing) imports no estimator library.
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from pintopic.config import range_problem
from pintopic.errors import PintopicError


@dataclass(frozen=True)
class Context:
    """What building or searching a classifier may depend on besides its hyper-parameters."""

    seed: int = 0
    metric: str = "euclidean"
    n_jobs: int = 2
    n_samples: int | None = None
    n_classes: int | None = None
    n_features: int | None = None


@dataclass(frozen=True)
class Entry:
    """One classifier. ``build(params, context)`` returns the model step (the pipeline puts a StandardScaler first);
    ``fold_scores(X, y_index, folds, settings, context)`` returns macro-F1 per (fold, setting), or is None to fit
    each setting on each fold; ``refit(X, y, params, settings, context)`` replaces the plain refit when set;
    ``search`` replaces the whole grid search (classifiers that learn nothing from training rows);
    ``feasible(settings, folds)`` drops settings the folds cannot serve; ``needs_library``: only stores of this
    backbone library get a cell (a text tower for zero-shot); ``saved`` names the step classes its
    models hold, each saved by ``SAVERS`` in its module; ``study``: one of the study's three; ``domains``: the
    values a grid parameter accepts, ``(kind, low, high, strict)`` with kind ``int`` or ``number`` and bounds as
    in :func:`pintopic.config.range_problem`."""

    name: str
    grid: dict[str, list]
    module: str
    probabilistic: bool
    summary: str
    build: str | None = "build"
    fold_scores: str | None = "fold_scores"
    refit: str | None = None
    search: str | None = None
    feasible: str | None = None
    needs_library: str | None = None
    saved: tuple[str, ...] = ()
    study: bool = False
    domains: dict[str, tuple] = field(default_factory=dict)

    def function(self, attribute: str | None) -> Callable | None:
        """The implementation named by one of this entry's fields (imported now), or None."""
        return None if attribute is None else getattr(importlib.import_module(self.module), attribute)


_CLASSIFY = "pintopic.classify."
#: Grid value domains: a whole number >= 1, a number > 0.
COUNT = ("int", 1, None, False)
POSITIVE = ("number", 0, None, True)

#: The catalog, in table order: the study's three first (Table 3.3's grids), then the classifiers beyond it.
ENTRIES: dict[str, Entry] = {entry.name: entry for entry in (
    Entry("knn", {"k": [1, 5, 10, 20, 50]}, _CLASSIFY + "knn", True,
          "k-nearest neighbours (Euclidean as in the study, or cosine)", feasible="feasible",
          saved=("KNeighborsClassifier",), study=True, domains={"k": COUNT}),
    Entry("lsvm", {"C": [0.01, 0.1, 1, 10, 100]}, _CLASSIFY + "lsvm", False,
          "linear SVM with LinearSVC's objective, one warm-started C path per fold", refit="refit",
          saved=("SquaredHingeSVC",), study=True, domains={"C": POSITIVE}),
    Entry("nn", {"batch_size": [32, 64, 128]}, _CLASSIFY + "nn", True,
          "the study's 3-layer network (one hidden ReLU layer, Adam, early stopping), trained by PyTorch",
          refit="refit", saved=("BatchedMLPClassifier",), study=True, domains={"batch_size": COUNT}),
    Entry("logreg", {"C": [0.001, 0.01, 0.1, 1]}, _CLASSIFY + "linear", True,
          "multinomial logistic regression, warm-started C path", saved=("LogisticRegression",),
          domains={"C": POSITIVE}),
    # gamma in units of 1/n_features, so one grid fits every feature width
    Entry("rbf", {"C": [1, 10, 100], "gamma": [0.25, 0.5, 1]}, _CLASSIFY + "rbf", False,
          "RBF-kernel SVM on precomputed fold kernels", saved=("SVC",),
          domains={"C": POSITIVE, "gamma": POSITIVE}),
    # whiten > 0: PCA-whitened first, with that variance floor (relative to the largest variance)
    Entry("wknn", {"k": [10, 20], "temperature": [0.02, 0.05, 0.1], "whiten": [0]}, _CLASSIFY + "wknn", True,
          "similarity-weighted k-NN on cosine similarity (optionally PCA-whitened)", saved=("WeightedKNN",),
          domains={"k": COUNT, "temperature": POSITIVE, "whiten": ("number", 0, None, False)}),
    Entry("lda", {"shrinkage": [0.1, 0.3, 0.6]}, _CLASSIFY + "lda", True,
          "shrinkage linear discriminant analysis on the top principal directions", saved=("ShrinkageLDA",),
          domains={"shrinkage": ("number", 0, 1, False)}),
    # each value is one set of prompt templates, ensembled; CV on the training part picks among sets
    Entry("zeroshot", {"templates": [["a photo of {}.", "a pin about {}.", "a picture of {}.", "an illustration of {}.",
                                      "clip art of {}.", "a drawing of {}.", "an image about {}."]]},
          _CLASSIFY + "zeroshot", True, "zero-shot from category names with an open_clip text tower",
          build=None, fold_scores=None, search="search", needs_library="openclip", saved=("ZeroShotClassifier",)),
    # the reference nn is checked against: scikit-learn's own MLPClassifier, several times slower
    Entry("nn_sklearn", {"batch_size": [32, 64, 128]}, _CLASSIFY + "nn", True,
          "nn trained by scikit-learn's MLPClassifier (the reference)", build="build_sklearn",
          fold_scores="sklearn_fold_scores", saved=("MLPClassifier",), domains={"batch_size": COUNT}),
    # not a classifier: the average of the run's best probabilistic pairs, members chosen by CV
    Entry("ensemble", {"max_members": [5]}, _CLASSIFY + "ensemble", False,
          "average of the best probabilistic pairs, members chosen by CV", build=None, fold_scores=None,
          domains={"max_members": COUNT}),
)}


def entry(name: str) -> Entry:
    """The catalog entry of a classifier name; a clear error naming the choices otherwise."""
    try:
        return ENTRIES[name]
    except (KeyError, TypeError):
        raise PintopicError(f"unknown classifier {name!r}; choose from {', '.join(ENTRIES)}") from None


def probabilistic() -> tuple[str, ...]:
    """Classifiers whose probabilities an ensemble may average."""
    return tuple(name for name, item in ENTRIES.items() if item.probabilistic)


def default_grids() -> dict[str, dict[str, list]]:
    """Every classifier's default grid (copies)."""
    return {name: {key: list(values) for key, values in item.grid.items()} for name, item in ENTRIES.items()}


def resolve_grids(classifiers, grids: dict | None = None) -> dict[str, dict[str, list]]:
    """The grid of each requested classifier: the defaults, with ``grids`` replacing whole entries."""
    grids = dict(grids or {})
    unknown = set(grids) - set(ENTRIES)
    if unknown:
        raise PintopicError(f"grids given for unknown classifiers: {', '.join(sorted(unknown))}")
    resolved = {}
    for name in classifiers:
        defaults = entry(name).grid
        grid = grids.get(name, defaults)
        if not isinstance(grid, dict) or set(grid) != set(defaults) or not all(
                isinstance(grid[p], (list, tuple)) and len(grid[p]) for p in defaults):
            wanted = ", ".join(repr(p) for p in sorted(defaults))
            raise PintopicError(f"the {name} grid must give a non-empty list for {wanted}, got {grid!r}")
        for parameter, domain in entry(name).domains.items():
            for value in grid[parameter]:
                problem = _domain_problem(value, domain)
                if problem:
                    raise PintopicError(f"the {name} grid's {parameter} values {problem}, not {value!r}")
        resolved[name] = {parameter: list(grid[parameter]) for parameter in defaults}
    return resolved


def _domain_problem(value, domain: tuple) -> str | None:
    """What ``value`` must be when it lies outside ``domain`` (see :class:`Entry`), or None when it fits."""
    kind, low, high, strict = domain
    if not (isinstance(value, int) and not isinstance(value, bool)):
        if kind == "int":
            return "must be whole numbers"
        if not (isinstance(value, float) and math.isfinite(value)):
            return "must be finite numbers"
    return range_problem(value, low, high, strict)
