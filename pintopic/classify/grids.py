"""Hyper-parameter grids of the study (Table 3.3), overridable per classifier."""
from __future__ import annotations

from pintopic.errors import PintopicError

#: The study's grids: one parameter per classifier.
DEFAULT_GRIDS: dict[str, dict[str, list]] = {
    "knn": {"k": [1, 5, 10, 20, 50]},
    "lsvm": {"C": [0.01, 0.1, 1, 10, 100]},
    "nn": {"batch_size": [32, 64, 128]},
}


def resolve_grids(classifiers, grids: dict | None = None) -> dict[str, dict[str, list]]:
    """The grid of each requested classifier: the defaults, with ``grids`` replacing whole entries."""
    grids = dict(grids or {})
    resolved = {}
    for name in classifiers:
        if name not in DEFAULT_GRIDS:
            raise PintopicError(f"unknown classifier {name!r}; choose from {', '.join(DEFAULT_GRIDS)}")
        grid = grids.get(name, DEFAULT_GRIDS[name])
        (parameter,) = DEFAULT_GRIDS[name]
        if set(grid) != {parameter} or not list(grid[parameter]):
            raise PintopicError(f"the {name} grid must give a non-empty list for {parameter!r}, got {grid!r}")
        resolved[name] = {parameter: list(grid[parameter])}
    unknown = set(grids) - set(DEFAULT_GRIDS)
    if unknown:
        raise PintopicError(f"grids given for unknown classifiers: {', '.join(sorted(unknown))}")
    return resolved
