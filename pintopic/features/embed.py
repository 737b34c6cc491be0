"""Embedding image files with a backbone: the same decoding, preprocessing and runtime as extraction.

Used by ``predict`` (and the service) for new images; a fused name ``a+b`` embeds with every component
and puts the L2-normalised blocks side by side, as the fused store is assembled.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

_BACKBONE_CACHE: dict[tuple, tuple] = {}


def prepared_backbone(spec: str, *, pretrained: bool = True, weights: str | None = None, runtime: str = "auto",
                      device: str = "auto", tta: str | None = None, sessions: int = 1, quantization: dict | None = None):
    """``(backbone, runner)`` built once per process and settings (predict calls this repeatedly).

    ``sessions`` > 1 gives an ONNX Runtime runner with that many single-threaded sessions (same backbone object);
    ``quantization`` (an INT8 store's ``meta.json`` entry) runs the cached INT8 graph it names.
    """
    from pintopic.features.builder import build_backbone
    from pintopic.features.runtime import make_runner

    graph = quantization and quantization.get("graph_sha256")
    cache_key = (spec, bool(pretrained), str(weights) if weights else None, runtime, device, tta, graph, sessions)
    if cache_key not in _BACKBONE_CACHE:
        plain = next((built for key, built in _BACKBONE_CACHE.items() if key[:3] == cache_key[:3]), None)
        backbone = plain[0] if plain else build_backbone(spec, pretrained=pretrained, weights=weights)
        path = None
        if quantization:
            from pintopic.features.quantize import cached_graph

            path = cached_graph(quantization)
        _BACKBONE_CACHE[cache_key] = (backbone, make_runner(backbone, runtime=runtime, device=device, tta=tta,
                                                            sessions=sessions, graph=path))
    return _BACKBONE_CACHE[cache_key]


def embed_images(spec: str, paths: Sequence[str | os.PathLike], *, pretrained: bool = True, weights: str | None = None,
                 batch_size: int = 32, runtime: str = "auto", tta: str | None = None, device: str = "auto",
                 workers: int = 0, quantization: dict | None = None, component_settings: list[dict] | None = None):
    """Embed image files with the same decoding, preprocessing and runtime as :func:`~pintopic.features.extraction.extract`.

    ``quantization``: the INT8 graph of an INT8 store (its ``meta.json`` entry), for a model trained on one;
    ``component_settings``: per component of a fusion (see :func:`embed_fused`).
    Returns ``(X, errors)``: ``X`` has one float32 row per path (NaN rows for failures) and ``errors``
    lists ``(index, status, detail)`` for the paths that could not be decoded.
    """
    from pintopic.features.decoding import decoded_batches
    from pintopic.features.preprocess import ImagePreprocessor
    from pintopic.features.registry import fusion_components

    settings = {"pretrained": pretrained, "batch_size": batch_size, "runtime": runtime, "tta": tta, "device": device,
                "workers": workers}
    if fusion_components(spec):
        return embed_fused(spec, paths, **settings, component_settings=component_settings)
    backbone, runner = prepared_backbone(spec, pretrained=pretrained, weights=weights, runtime=runtime, device=device, tta=tta,
                                         quantization=quantization)
    paths = [os.fspath(path) for path in paths]
    X = np.full((len(paths), backbone.dim), np.nan, dtype=np.float32)
    errors: list[tuple[int, str, str]] = []
    batches = [range(start, min(start + batch_size, len(paths))) for start in range(0, len(paths), batch_size)]
    for indices, arrays, failures in decoded_batches(paths, ImagePreprocessor(backbone.preprocessing), batches, workers):
        errors.extend(failures)
        if indices:
            X[indices] = runner(arrays)
    return X, sorted(errors)


def embed_fused(name: str, paths: Sequence[str | os.PathLike], **settings):
    """:func:`embed_images` for a fusion: every component embeds the files, blocks L2-normalised side by side.

    Per-component settings (e.g. ``tta``) may be given as ``component_settings=[{...}, ...]``.
    """
    from pintopic.features.fusion import l2_normalised
    from pintopic.features.registry import fusion_components

    parts = fusion_components(name)
    per_component = settings.pop("component_settings", None) or [{} for _ in parts]
    blocks, errors = [], {}
    for part, extra in zip(parts, per_component):
        X, failures = embed_images(part, paths, **{**settings, **extra})
        blocks.append(l2_normalised(X))
        for index, status, detail in failures:
            errors.setdefault(index, (index, status, detail))
    return np.hstack(blocks), sorted(errors.values())
