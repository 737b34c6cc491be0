"""Predicting categories for new images with a saved model folder (a pair's or the ensemble's).

Public API (imported on first use): :func:`predict`, :class:`Predictor`, :func:`load_predictor`,
:func:`predict_with_model`, :func:`expand_inputs`, :func:`format_predictions`, :func:`zero_shot_predict`. Modules: ``predictor``
(loading models, embedding once per backbone, averaging), ``inputs`` (which files), ``formats`` (output text),
``zeroshot`` (category names only).
"""
from __future__ import annotations

from pintopic.exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "predict": "pintopic.predict.predictor",
    "load_predictor": "pintopic.predict.predictor",
    "Predictor": "pintopic.predict.predictor",
    "predict_with_model": "pintopic.predict.predictor",
    "expand_inputs": "pintopic.predict.inputs",
    "format_predictions": "pintopic.predict.formats",
    "zero_shot_predict": "pintopic.predict.zeroshot",
})
