"""Feature stage: backbone registry, batched extraction into a sharded store, fast CPU inference.

Public API (imported lazily, so ``import pintopic.features`` does not import torch): :func:`extract`,
:func:`embed_images`, :func:`feature_store`, :func:`list_stores`, :func:`load_features`,
:func:`describe_backbones`, :func:`build_backbone`, :func:`resolve_backbone`.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "extract": "pintopic.features.extraction",
    "embed_images": "pintopic.features.extraction",
    "feature_store": "pintopic.features.extraction",
    "list_stores": "pintopic.features.extraction",
    "store_key": "pintopic.features.extraction",
    "load_features": "pintopic.features.store",
    "describe_backbones": "pintopic.features.registry",
    "build_backbone": "pintopic.features.registry",
    "resolve_backbone": "pintopic.features.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pintopic.features' has no attribute {name!r}")
