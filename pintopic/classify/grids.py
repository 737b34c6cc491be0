"""Hyper-parameter grids of the study (Table 3.3), overridable per classifier."""
from __future__ import annotations

from pintopic.errors import PintopicError

#: The study's grids: one parameter per classifier.
DEFAULT_GRIDS: dict[str, dict[str, list]] = {
    "knn": {"k": [1, 5, 10, 20, 50]},
    "lsvm": {"C": [0.01, 0.1, 1, 10, 100]},
    "nn": {"batch_size": [32, 64, 128]},
    "logreg": {"C": [0.001, 0.01, 0.1, 1]},
    "rbf": {"C": [1, 10, 100], "gamma": [0.25, 0.5, 1]},  # gamma in units of 1/n_features
    # similarity-weighted k-NN (cosine on standardised features); its probabilities suit ensembles.
    # whiten > 0: PCA-whitened first, with that variance floor (relative to the largest variance)
    "wknn": {"k": [10, 20], "temperature": [0.02, 0.05, 0.1], "whiten": [0]},
    # shrinkage LDA on the top principal directions (a Gaussian-class model: another view for ensembles)
    "lda": {"shrinkage": [0.1, 0.3, 0.6]},
    # each value is one set of prompt templates, ensembled; CV on the training part picks among sets
    "zeroshot": {"templates": [["a photo of {}.", "a pin about {}.", "a picture of {}.", "an illustration of {}.",
                                "clip art of {}.", "a drawing of {}.", "an image about {}."]]},
    # not a classifier: the average of the run's best probabilistic pairs, members chosen by CV
    "ensemble": {"max_members": [5]},
}


def resolve_grids(classifiers, grids: dict | None = None) -> dict[str, dict[str, list]]:
    """The grid of each requested classifier: the defaults, with ``grids`` replacing whole entries."""
    grids = dict(grids or {})
    resolved = {}
    for name in classifiers:
        if name not in DEFAULT_GRIDS:
            raise PintopicError(f"unknown classifier {name!r}; choose from {', '.join(DEFAULT_GRIDS)}")
        grid = grids.get(name, DEFAULT_GRIDS[name])
        parameters = set(DEFAULT_GRIDS[name])
        if set(grid) != parameters or not all(list(grid[p]) for p in parameters):
            wanted = ", ".join(repr(p) for p in sorted(parameters))
            raise PintopicError(f"the {name} grid must give a non-empty list for {wanted}, got {grid!r}")
        resolved[name] = {parameter: list(grid[parameter]) for parameter in DEFAULT_GRIDS[name]}
    unknown = set(grids) - set(DEFAULT_GRIDS)
    if unknown:
        raise PintopicError(f"grids given for unknown classifiers: {', '.join(sorted(unknown))}")
    return resolved
