"""Top-k categories for images with a fitted model folder (``RUN/results/models/<key>__<classifier>/`` or the
saved ensemble ``RUN/results/models/ensemble/``).

A :class:`Predictor` holds the loaded members (a pair has one, an ensemble several) and the distinct
backbones they need; each backbone embeds an image once, with the model's own backbone settings (spec,
pretrained, tta, and the INT8 graph of INT8 features, recorded from the feature store it was trained on), through
:func:`pintopic.features.embed.embed_images` (files) or :meth:`Predictor.prepare` + :meth:`Predictor.embed_prepared`
(the same decoding and runners, for callers that gather their own batches). The CLI's ``predict``, the service
and crawl-wide prediction all score through it, so they give the same answer for the same image.
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
                       *[graph.get("graph_sha256") for graph in component_quantizations(backbone) if graph]])


def component_quantizations(backbone: dict) -> list:
    """The INT8 graph entry of each component (one for a plain backbone), None where it ran in FP32."""
    parts = backbone.get("component_backbones") or [backbone]
    return [part.get("quantization") for part in parts]


@dataclass
class Predictor:
    """Loaded members ``[(pipeline, backbone description)]``; ``categories`` orders an ensemble's average."""

    members: list[tuple[object, dict]]
    categories: list[str] | None = None
    info: dict = field(default_factory=dict)
    _embedders: dict | None = field(default=None, init=False, repr=False, compare=False)

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
            features[key], errors = embed_images(backbone["spec"], paths, pretrained=bool(backbone.get("pretrained", True)),
                                                 tta=backbone.get("tta"), batch_size=batch_size, expect=backbone)
            for index, status, detail in errors:
                failed.setdefault(index, f"{status}: {detail}")
        return features, failed

    def embedders(self) -> dict:
        """``{backbone_key: BackboneEmbedder}`` for :meth:`prepare` and :meth:`embed_prepared` (built once)."""
        from pintopic.features.embed import BackboneEmbedder

        if self._embedders is None:
            self._embedders = {key: BackboneEmbedder(backbone["spec"], pretrained=bool(backbone.get("pretrained", True)),
                                                     tta=backbone.get("tta"), expect=backbone)
                               for key, backbone in self.backbones.items()}
        return self._embedders

    def prepare(self, source, *, name: str = "", max_pixels: int | None = None) -> dict[str, list[np.ndarray]]:
        """One image's model inputs for every backbone (a path or an open binary stream; ``name`` hints at the
        format): the decoding half of :meth:`embed_files`, for callers that batch images themselves. Raises
        :class:`~pintopic.imageio.ImageError`."""
        return {key: embedder.prepare(source, name=name, max_pixels=max_pixels)
                for key, embedder in self.embedders().items()}

    def embed_prepared(self, prepared: list[dict[str, list[np.ndarray]]]) -> dict[str, np.ndarray]:
        """``{backbone_key: X}`` for images :meth:`prepare` returned, each backbone run once on the whole batch."""
        return {key: embedder.embed([item[key] for item in prepared]) for key, embedder in self.embedders().items()}

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
        order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
        return [[{"category": str(classes[c]), "score": float(scores[row, c])} for c in order[row]]
                for row in range(len(scores))]

    def predict_files(self, paths, top_k: int = 3, *, batch_size: int = 32, errors: dict[int, str] | None = None) -> list[dict]:
        """One dict per path: ``path``, ``top`` and ``score_kind``, or ``path`` and ``error``; an image fails
        if any backbone fails on it, and the other images are still predicted. ``errors``: paths not to open
        (index -> reason), answered with that reason."""
        check_top_k(top_k)
        predictions: list[dict] = [{"path": path} for path in paths]
        failed = dict(errors or {})
        todo = [i for i in range(len(paths)) if i not in failed]
        if not todo:
            for index, reason in failed.items():
                predictions[index]["error"] = reason
            return predictions
        computed, embed_failed = self.embed_files([paths[i] for i in todo], batch_size=batch_size)
        failed.update({todo[i]: reason for i, reason in embed_failed.items()})
        features = {key: np.full((len(paths), X.shape[1]), np.nan, dtype=X.dtype) for key, X in computed.items()}
        for key, X in computed.items():
            features[key][todo] = X
        good = [i for i in todo if i not in failed and all(np.isfinite(X[i]).all() for X in features.values())]
        for index in range(len(paths)):
            if index not in good:
                predictions[index]["error"] = failed.get(index, "no features could be computed")
        if good:
            scores, kind = self.scores({key: X[good] for key, X in features.items()})
            for index, top in zip(good, self.top(scores, top_k)):
                predictions[index].update(score_kind=kind, top=top)
        return predictions


def check_top_k(top_k) -> None:
    """``--top-k`` must be a whole number of at least 1."""
    from pintopic.errors import PintopicError

    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise PintopicError(f"--top-k must be a whole number of at least 1, got {top_k!r}")


def load_predictor(model_dir: str | os.PathLike) -> Predictor:
    """The :class:`Predictor` of a model folder."""
    return Predictor.load(model_dir)


def predict(model_dir: str | os.PathLike, inputs, top_k: int = 3, *, batch_size: int = 32) -> list[dict]:
    """One dict per image found in ``inputs`` (files, or folders of images): ``path`` and ``top``
    ([{category, score}], best first) with ``score_kind``, or ``path`` and ``error`` when the file could not be
    read; the other images are still predicted."""
    from pintopic.predict.inputs import find_images

    check_top_k(top_k)  # the arguments and the inputs are checked before any model is loaded
    images = find_images(inputs)
    return _predict_images(Predictor.load(model_dir), images, top_k, batch_size)


def predict_with_model(model, backbone: dict, inputs, top_k: int = 3, *, batch_size: int = 32) -> list[dict]:
    """:func:`predict` for a model in memory (e.g. a zero-shot one) and its backbone description."""
    from pintopic.predict.inputs import find_images

    return _predict_images(Predictor([(model, backbone)]), find_images(inputs), top_k, batch_size)


def _predict_images(predictor: Predictor, images, top_k: int, batch_size: int) -> list[dict]:
    return predictor.predict_files([image.path for image in images], top_k, batch_size=batch_size,
                                   errors={index: image.error for index, image in enumerate(images) if image.error})
