"""Top-k categories for images with a fitted model folder (``RUN/results/models/<key>__<classifier>/`` or the
saved ensemble ``RUN/results/models/ensemble/``).

A :class:`Predictor` holds the loaded members (a pair has one, an ensemble several) and the distinct
backbones they need; each backbone embeds an image once, with the model's own backbone settings (spec,
pretrained, tta, and the INT8 graph of INT8 features, recorded from the feature store it was trained on), through
:func:`pintopic.features.embed.embed_images`. The CLI's ``predict``, the service and crawl-wide
prediction all score through it, so they give the same answer for the same image.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np


def backbone_key(backbone: dict) -> str:
    """What makes two members' features the same: spec, pretrained weights or not, test-time augmentation, and the
    INT8 graph(s) of a model trained on INT8 features."""
    return json.dumps([backbone.get("spec"), bool(backbone.get("pretrained", True)), backbone.get("tta"),
                       *[graph.get("graph_sha256") for graph in _quantizations(backbone) if graph]])


def _quantizations(backbone: dict) -> list:
    """The INT8 graph entry of each component (one for a plain backbone), None where it ran in FP32."""
    parts = backbone.get("component_backbones") or [backbone]
    return [part.get("quantization") for part in parts]


def _embed_settings(backbone: dict) -> dict:
    """:func:`~pintopic.features.embed.embed_images` settings that reproduce a store's features: its weights, TTA and
    INT8 graph (per component for a fusion)."""
    settings = {"pretrained": bool(backbone.get("pretrained", True)), "tta": backbone.get("tta")}
    if backbone.get("component_backbones"):
        settings["component_settings"] = [{"quantization": graph} for graph in _quantizations(backbone)]
    else:
        settings["quantization"] = backbone.get("quantization")
    return settings


@dataclass
class Predictor:
    """Loaded members ``[(pipeline, backbone description)]``; ``categories`` orders an ensemble's average."""

    members: list[tuple[object, dict]]
    categories: list[str] | None = None
    info: dict = field(default_factory=dict)

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> Predictor:
        """The predictor of a model folder: one member for a pair's model, the members for an ensemble's."""
        from pintopic.classify.ensemble import load_ensemble
        from pintopic.classify.persist import load_model, read_model_info

        info = read_model_info(model_dir)
        if info.get("classifier") == "ensemble":
            members = [(model, member.get("backbone", {})) for model, member in load_ensemble(model_dir, info)]
            return cls(members, list(info["categories"]), info)
        model, info = load_model(model_dir)
        return cls([(model, info.get("backbone", {}))], None, info)

    @property
    def backbones(self) -> dict[str, dict]:
        """The distinct backbones the members need, ``{backbone_key: description}`` in member order."""
        return {backbone_key(backbone): backbone for _, backbone in self.members}

    @property
    def classes(self) -> np.ndarray:
        """The categories of :meth:`scores`' columns."""
        return np.asarray(self.categories) if len(self.members) > 1 else np.asarray(self.members[0][0].classes_)

    def embed_files(self, paths, *, batch_size: int = 32) -> tuple[dict[str, np.ndarray], dict[int, str]]:
        """``({backbone_key: X}, {index: reason})``: every backbone's features of the files (NaN rows for failures)."""
        from pintopic.features.embed import embed_images

        features: dict[str, np.ndarray] = {}
        failed: dict[int, str] = {}
        for key, backbone in self.backbones.items():
            features[key], errors = embed_images(backbone["spec"], paths, batch_size=batch_size, **_embed_settings(backbone))
            for index, status, detail in errors:
                failed.setdefault(index, f"{status}: {detail}")
        return features, failed

    def scores(self, features: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
        """``(scores (n, K) in :attr:`classes` order, kind)`` for rows of features keyed by :func:`backbone_key`."""
        from pintopic.classify.ensemble import averaged_probabilities
        from pintopic.classify.estimators import class_scores

        if len(self.members) == 1:
            model, backbone = self.members[0]
            return class_scores(model, features[backbone_key(backbone)])
        probabilities = [(model.predict_proba(features[backbone_key(backbone)]), model.classes_)
                         for model, backbone in self.members]
        return averaged_probabilities(probabilities, self.classes), "probability"

    def top(self, scores: np.ndarray, top_k: int) -> list[list[dict]]:
        """Per row, the ``top_k`` categories with their scores, best first (ties keep the class order)."""
        classes = self.classes
        order = np.argsort(-scores, axis=1, kind="stable")[:, :max(1, top_k)]
        return [[{"category": str(classes[c]), "score": float(scores[row, c])} for c in order[row]]
                for row in range(len(scores))]

    def predict_files(self, paths, top_k: int = 3, *, batch_size: int = 32) -> list[dict]:
        """One dict per path: ``path``, ``top`` and ``score_kind``, or ``path`` and ``error``; an image fails
        if any backbone fails on it, and the other images are still predicted."""
        predictions: list[dict] = [{"path": path} for path in paths]
        if not paths:
            return predictions
        features, failed = self.embed_files(paths, batch_size=batch_size)
        good = [i for i in range(len(paths)) if i not in failed and all(np.isfinite(X[i]).all() for X in features.values())]
        for index in range(len(paths)):
            if index not in good:
                predictions[index]["error"] = failed.get(index, "no features could be computed")
        if good:
            scores, kind = self.scores({key: X[good] for key, X in features.items()})
            for index, top in zip(good, self.top(scores, top_k)):
                predictions[index].update(score_kind=kind, top=top)
        return predictions


def load_predictor(model_dir: str | os.PathLike) -> Predictor:
    """The :class:`Predictor` of a model folder."""
    return Predictor.load(model_dir)


def predict(model_dir: str | os.PathLike, inputs, top_k: int = 3, *, batch_size: int = 32) -> list[dict]:
    """One dict per image found in ``inputs`` (files, or folders of images): ``path`` and ``top``
    ([{category, score}], best first) with ``score_kind``, or ``path`` and ``error`` when the file could not be
    read; the other images are still predicted."""
    from pintopic.predict.inputs import expand_inputs

    return Predictor.load(model_dir).predict_files(expand_inputs(inputs), top_k, batch_size=batch_size)


def predict_with_model(model, backbone: dict, inputs, top_k: int = 3, *, batch_size: int = 32) -> list[dict]:
    """:func:`predict` for a model in memory (e.g. a zero-shot one) and its backbone description."""
    from pintopic.predict.inputs import expand_inputs

    return Predictor([(model, backbone)]).predict_files(expand_inputs(inputs), top_k, batch_size=batch_size)
