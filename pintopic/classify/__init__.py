"""Classify stage: the study's protocol (split, grid-searched classifiers, macro-F1) -> ``RUN/results/``.

Public API (imported on first use): :func:`evaluate` (the stage, :mod:`pintopic.classify.evaluation`),
:class:`BelowChanceWarning`. Modules: ``evaluate`` (the stage), ``grids`` (the study's grids), ``estimators``
(building classifiers), ``search`` (cross-validated grid search), ``ensemble``, ``persist`` (saving models
without pickle), ``metrics``, ``tables`` (the study's Table 4.1), ``zeroshot``.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "evaluate": "pintopic.classify.evaluation",
    "BelowChanceWarning": "pintopic.classify.evaluation",
    "warn_if_below_chance": "pintopic.classify.evaluation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pintopic.classify' has no attribute {name!r}")
