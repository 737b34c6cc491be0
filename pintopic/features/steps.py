"""The feature stage's work as engine steps (:mod:`pintopic.engine`): files -> model inputs -> vectors.

:class:`DecodeStep` (CPU) turns each row's file into the exact uint8 inputs of one or more preprocessings
(read from the run's pixel cache when it holds them); :class:`EmbedStep` (built once per worker: one
inference session) turns one preprocessing's inputs into vectors. Extraction and crawl-wide prediction hand
them to whichever engine runs the job, so a cluster computes what one machine computes.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def describe_runner(runner) -> dict:
    """Runtime, device and thread layout of a runner (a TTA wrapper reports what it wraps)."""
    layer = getattr(runner, "runner", runner)
    return {"runtime": runner.name, "device": getattr(layer, "device", "cpu"), "layout": getattr(layer, "layout", None)}


class DecodeStep:
    """Rows ``image_id``, ``path`` (the file to decode, as bytes), ``original`` (decoded when ``path``, a decode-cache
    copy, fails) and ``cached`` (the pixel cache in folder ``pixel_cache`` holds the row's input) -> ``image_id``,
    ``status``, ``detail`` and ``pixels``: the inputs of every preprocessing, flattened side by side (zeros
    for a failed file)."""

    def __init__(self, preprocessings: Sequence, pixel_cache: str | None = None):
        self.preprocessings = list(preprocessings)
        self.pixel_cache = pixel_cache
        self._decoder = None

    def __getstate__(self):
        return {"preprocessings": self.preprocessings, "pixel_cache": self.pixel_cache, "_decoder": None}

    @property
    def width(self) -> int:
        return sum(int(np.prod(p.input_size)) for p in self.preprocessings)

    def _cache(self):
        from pintopic.features.pixel_cache import load_cache

        return load_cache(Path(self.pixel_cache), self.preprocessings[0]) if self.pixel_cache else None

    def _decode(self, paths: list, originals: list):
        from pintopic.features.decoding import DecodeDataset
        from pintopic.features.pixel_cache import MultiPreprocessor
        from pintopic.features.preprocess import ImagePreprocessor

        if self._decoder is None:
            many = len(self.preprocessings) > 1
            self._decoder = MultiPreprocessor(self.preprocessings) if many else ImagePreprocessor(self.preprocessings[0])
        return DecodeDataset(paths, self._decoder, originals)

    def __call__(self, batch: dict) -> dict:
        count = len(batch["image_id"])
        pixels = np.zeros((count, self.width), dtype=np.uint8)
        status, detail = np.full(count, "ok", dtype=object), np.full(count, "", dtype=object)
        cached = np.asarray(batch["cached"], dtype=bool) if "cached" in batch else np.zeros(count, dtype=bool)
        cache = self._cache() if cached.any() else None
        if cache is None:  # a cache that no longer checks out: decode, as extraction would without one
            cached[:] = False
        else:
            pixels[cached] = cache.get(list(batch["image_id"][cached])).reshape(int(cached.sum()), -1)
        todo = np.flatnonzero(~cached)
        originals = batch["original"] if "original" in batch else batch["path"]
        decoder = self._decode([os.fsdecode(batch["path"][i]) for i in todo], [os.fsdecode(originals[i]) for i in todo])
        for position, row in enumerate(todo):
            _, array, status[row], detail[row] = decoder[position]
            if array is not None:
                pixels[row] = array.reshape(-1)
        return {"image_id": batch["image_id"], "status": status, "detail": detail, "pixels": pixels}


def embed_rows(runner, input_size, pixels: np.ndarray, ok: np.ndarray, dim: int) -> np.ndarray:
    """float32 vectors of the ``ok`` rows of flattened ``pixels`` (``input_size`` each); zeros elsewhere."""
    vectors = np.zeros((len(pixels), dim), dtype=np.float32)
    if ok.any():
        vectors[ok] = runner(np.ascontiguousarray(pixels[ok]).reshape(-1, *input_size))
    return vectors


class EmbedStep:
    """Built once per worker: ``spec``'s runner (:func:`~pintopic.features.embed.prepared_backbone` ``settings``)
    on :class:`DecodeStep`'s rows -> ``image_id``, ``status``, ``detail``, ``vector`` (float32, zeros for failed
    rows) and ``runner`` (JSON: runtime, device, thread layout)."""

    def __init__(self, spec: str, settings: dict):
        from pintopic.features.embed import prepared_backbone

        self.backbone, self.runner = prepared_backbone(spec, **settings)
        self.description = json.dumps(describe_runner(self.runner))

    def __call__(self, batch: dict) -> dict:
        ok = batch["status"] == "ok"
        vectors = embed_rows(self.runner, self.backbone.preprocessing.input_size, batch["pixels"], ok, self.backbone.dim)
        return {"image_id": batch["image_id"], "status": batch["status"], "detail": batch["detail"], "vector": vectors,
                "runner": np.full(len(ok), self.description, dtype=object)}
