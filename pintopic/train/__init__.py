"""Training backbones: ``pintopic finetune`` (:func:`finetune`), whose result the feature stage reads as the
backbone ``finetuned:<name>`` (:mod:`pintopic.features.finetuned`); features never import this package."""
from __future__ import annotations

from pintopic.exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "finetune": "pintopic.train.finetuning",
    "split_model": "pintopic.train.finetuning",
})
