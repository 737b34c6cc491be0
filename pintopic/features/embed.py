"""Embedding image files with a backbone: the same decoding, preprocessing and runtime as extraction.

Used by ``predict`` for new images; a fused name ``a+b`` embeds with every component and puts the
L2-normalised blocks side by side, as the fused store is assembled. :class:`BackboneEmbedder` splits the
same work in two for callers that gather their own batches (the service): per-image preparation
(decode, resize, crop to uint8 model inputs) and the batched model run.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

from pintopic.features.fusion import fused_blocks

_BACKBONE_CACHE: dict[tuple, tuple] = {}
_MODEL_CACHE: dict[tuple, object] = {}
#: Builds one backbone at a time: a random-init build seeds torch's global generator, so two threads building at
#: once (the service warming two models) would get different weights.
_BUILD_LOCK = threading.Lock()


def prepared_backbone(spec: str, *, pretrained: bool = True, weights: str | None = None, runtime: str = "auto",
                      device: str = "auto", tta: str | None = None, sessions: int = 1, quantization: dict | None = None):
    """``(backbone, runner)`` built once per process and settings (predict calls this repeatedly).

    ``sessions`` > 1 gives an ONNX Runtime runner with that many single-threaded sessions (same backbone object);
    ``quantization`` (an INT8 store's ``meta.json`` entry) runs the cached INT8 graph it names.
    """
    from pintopic.features.runtime import make_runner

    graph = quantization and quantization.get("graph_sha256")
    cache_key = (spec, bool(pretrained), str(weights) if weights else None, runtime, device, tta, graph, sessions)
    with _BUILD_LOCK:
        if cache_key not in _BACKBONE_CACHE:
            backbone = _built(spec, pretrained, weights)
            path = None
            if quantization:
                from pintopic.features.quantize import cached_graph

                path = cached_graph(quantization)
            _BACKBONE_CACHE[cache_key] = (backbone, make_runner(backbone, runtime=runtime, device=device, tta=tta,
                                                                sessions=sessions, graph=path))
        return _BACKBONE_CACHE[cache_key]


def built_backbone(spec: str, *, pretrained: bool = True, weights: str | None = None):
    """The backbone :func:`prepared_backbone` runs, without a runner: built once per process and weights, so a
    caller that needs only the model (to quantize it, to name its store) does not build it a second time."""
    with _BUILD_LOCK:
        return _built(spec, pretrained, weights)


def _built(spec: str, pretrained: bool, weights: str | None):
    from pintopic.features.builder import build_backbone

    key = (spec, bool(pretrained), str(weights) if weights else None)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = build_backbone(spec, pretrained=pretrained, weights=weights)
    return _MODEL_CACHE[key]


def release_backbones() -> None:
    """Forget every backbone and runner :func:`prepared_backbone` built (extraction keeps one backbone's model and
    sessions in memory at a time, so a run over several backbones does not hold them all)."""
    with _BUILD_LOCK:
        _BACKBONE_CACHE.clear()
        _MODEL_CACHE.clear()


def check_backbone(backbone, expected: dict) -> None:
    """Refuse a backbone that is not the one a model was trained on: ``expected`` (a store's meta.json as the model
    recorded it) must name the same weights, preprocessing, dimension and store key as ``backbone`` gives now."""
    import json

    from pintopic.errors import PintopicError
    from pintopic.features.store import store_key

    def same(a, b) -> bool:
        return json.loads(json.dumps(a)) == json.loads(json.dumps(b))

    checks = [("weights", expected.get("weights_sha256"), lambda: backbone.weights_sha256),
              ("preprocessing", expected.get("preprocessing"), lambda: backbone.preprocessing.to_dict()),
              ("dimension", expected.get("dim"), lambda: backbone.dim)]
    if expected.get("key") and expected.get("dtype"):
        checks.append(("feature store key", expected["key"],
                       lambda: store_key(backbone, dtype=expected["dtype"], tta=expected.get("tta"),
                                         quantization=expected.get("quantization"))))
    differ = [name for name, recorded, now in checks if recorded is not None and not same(recorded, now())]
    if differ:
        raise PintopicError(
            f"the model was trained on features of backbone {expected.get('spec')!r} "
            f"(weights {expected.get('weights_source') or '?'}), but {backbone.spec.name!r} gives other {', '.join(differ)} "
            "now: its model.json was edited or the backbone's weights changed; refit it with `pintopic evaluate`")


def embed_images(spec: str, paths: Sequence[str | os.PathLike], *, pretrained: bool = True, weights: str | None = None,
                 batch_size: int = 32, runtime: str = "auto", tta: str | None = None, device: str = "auto",
                 workers: int = 0, expect: dict | None = None):
    """Embed image files with the same decoding, preprocessing and runtime as :func:`~pintopic.features.extraction.extract`.

    Returns ``(X, errors)``: ``X`` has one float32 row per path (NaN rows for failures) and ``errors``
    lists ``(index, status, detail)`` for the paths that could not be decoded. With ``expect`` (the backbone a
    model recorded), a backbone that differs from it is refused (:func:`check_backbone`) before any image is read,
    and a model trained on INT8 features embeds with the INT8 graph it recorded.
    """
    from pintopic.features.decoding import decoded_batches
    from pintopic.features.preprocess import ImagePreprocessor
    from pintopic.features.registry import fusion_components

    settings = {"pretrained": pretrained, "batch_size": batch_size, "runtime": runtime, "tta": tta, "device": device,
                "workers": workers}
    if fusion_components(spec):
        parts = (expect or {}).get("component_backbones")
        return embed_fused(spec, paths, **settings, component_settings=[{"expect": part} for part in parts] if parts else None)
    backbone, runner = prepared_backbone(spec, pretrained=pretrained, weights=weights, runtime=runtime, device=device, tta=tta,
                                         quantization=(expect or {}).get("quantization"))
    if expect:
        check_backbone(backbone, expect)
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
    from pintopic.features.registry import fusion_components

    parts = fusion_components(name)
    per_component = settings.pop("component_settings", None) or [{} for _ in parts]
    blocks, errors = [], {}
    for part, extra in zip(parts, per_component):
        X, failures = embed_images(part, paths, **{**settings, **extra})
        blocks.append(X)
        for index, status, detail in failures:
            errors.setdefault(index, (index, status, detail))
    return fused_blocks(blocks), sorted(errors.values())


class BackboneEmbedder:
    """A backbone name (a fusion: each component) ready to embed images the way :func:`embed_images` does,
    with preparation and the model run apart: :meth:`prepare` one image (any thread), :meth:`embed` a batch.

    Same cached runners, decoder and transforms as :func:`embed_images`, so the features are the same.
    """

    def __init__(self, spec: str, *, pretrained: bool = True, weights: str | None = None, runtime: str = "auto",
                 device: str = "auto", tta: str | None = None, expect: dict | None = None):
        from pintopic.features.preprocess import ImagePreprocessor
        from pintopic.features.registry import fusion_components

        self.spec = spec
        self.fused = bool(fusion_components(spec))
        names = fusion_components(spec) or [spec]
        # the backbone a model recorded (a fusion: per component): any other is refused, an INT8 graph is used
        wanted = ((expect.get("component_backbones") if self.fused else [expect]) if expect else None) or [{}] * len(names)
        self.parts = [prepared_backbone(part, pretrained=pretrained, weights=weights, runtime=runtime, device=device,
                                        tta=tta, quantization=recorded.get("quantization"))
                      for part, recorded in zip(names, wanted)]
        for (backbone, _), recorded in zip(self.parts, wanted):
            if recorded:
                check_backbone(backbone, recorded)
        self.preprocessors = [ImagePreprocessor(backbone.preprocessing) for backbone, _ in self.parts]
        self.dim = sum(backbone.dim for backbone, _ in self.parts)

    def prepare(self, source, *, name: str = "", max_pixels: int | None = None) -> list[np.ndarray]:
        """One image's uint8 model inputs, one per component, from a path or an open binary stream (decoded once
        per JPEG draft size). Raises :class:`~pintopic.imageio.ImageError`."""
        decoded: dict[int, object] = {}
        inputs = []
        for preprocessor in self.preprocessors:
            draft = preprocessor.preprocessing.draft_size
            if draft not in decoded:
                decoded[draft] = preprocessor.decode(source, name=name, max_pixels=max_pixels)
            inputs.append(preprocessor.transform(decoded[draft]))
        return inputs

    def embed(self, prepared: Sequence[list[np.ndarray]]) -> np.ndarray:
        """Features (one float32 row per image) of images :meth:`prepare` returned, run as one batch."""
        blocks = [runner(np.stack([inputs[part] for inputs in prepared]))
                  for part, (_, runner) in enumerate(self.parts)]
        return fused_blocks(blocks) if self.fused else np.asarray(blocks[0], dtype=np.float32)
