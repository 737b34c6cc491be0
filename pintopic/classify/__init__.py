"""Classify stage: the study's protocol (split, grid-searched classifiers, macro-F1) -> ``RUN/results/``.

Public API (imported on first use): :func:`evaluate` (the stage, :mod:`pintopic.classify.evaluation`),
:class:`BelowChanceWarning`. Modules: ``evaluate`` (the stage), ``grids`` (the study's grids), ``estimators``
(building classifiers), ``search`` (cross-validated grid search), ``ensemble``, ``persist`` (saving models
without pickle), ``metrics``, ``tables`` (the study's Table 4.1), ``zeroshot``.
"""
from __future__ import annotations

from pintopic.exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "evaluate": "pintopic.classify.evaluation",
    "BelowChanceWarning": "pintopic.classify.evaluation",
    "warn_if_below_chance": "pintopic.classify.evaluation",
})
