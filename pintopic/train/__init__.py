"""Training backbones: ``pintopic finetune`` (:func:`finetune`), whose result the feature stage reads as the
backbone ``finetuned:<name>`` (:mod:`pintopic.features.finetuned`); features never import this package."""
from __future__ import annotations


def __getattr__(name: str):
    if name in ("finetune", "split_model"):
        from pintopic.train import finetuning as module

        return getattr(module, name)
    raise AttributeError(f"module 'pintopic.train' has no attribute {name!r}")
