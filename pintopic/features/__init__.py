"""Feature stage: backbone registry and builder, batched extraction into a sharded store, fast CPU inference.

Public API (imported lazily, so ``import pintopic.features`` does not import torch): :func:`extract`,
:func:`embed_images`, :func:`feature_store`, :func:`list_stores`, :func:`load_features`, :func:`store_key`,
:func:`describe_backbones`, :func:`build_backbone`, :func:`resolve_backbone`, :func:`build_pixel_caches`.
Modules, one role each: ``registry`` (names -> specs), ``builder`` (specs -> models), ``weights``,
``preprocess``, ``runtime`` (ONNX Runtime / PyTorch runners), ``decoding`` (worker pool), ``pixel_cache``,
``store`` (read, find, write shards), ``fusion``, ``embed`` (files -> vectors), ``extract`` (the stage),
``finetuned`` (fine-tuned folders as backbones).
"""
from __future__ import annotations

from pintopic.exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "extract": "pintopic.features.extraction",
    "store_key": "pintopic.features.store",
    "embed_images": "pintopic.features.embed",
    "prepared_backbone": "pintopic.features.embed",
    "feature_store": "pintopic.features.store",
    "list_stores": "pintopic.features.store",
    "find_stores": "pintopic.features.fusion",
    "load_features": "pintopic.features.store",
    "describe_backbones": "pintopic.features.builder",
    "build_backbone": "pintopic.features.builder",
    "resolve_backbone": "pintopic.features.registry",
    "build_pixel_caches": "pintopic.features.pixel_cache",
})
