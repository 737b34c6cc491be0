"""Top-k categories for image files with a fitted model folder (RUN/results/models/<key>__<classifier>/ or the
saved ensemble).

Features are extracted with the model's own backbone settings (spec, pretrained, tta, recorded from the
feature store it was trained on), through :func:`pintopic.features.embed.embed_images`.
"""
from __future__ import annotations

import json
import os

import numpy as np


def load_predictor(model_dir: str | os.PathLike) -> tuple[list[tuple[object, dict]], list[str] | None]:
    """``([(pipeline, backbone description)], categories)`` of a model folder: one member for a pair's model,
    the members for an ensemble's (categories then fix the order their probabilities are averaged in)."""
    from pintopic.classify.ensemble import load_ensemble
    from pintopic.classify.persist import load_model, read_model_info

    info = read_model_info(model_dir)
    if info.get("classifier") == "ensemble":
        return [(model, member.get("backbone", {})) for model, member in load_ensemble(model_dir, info)], info["categories"]
    model, info = load_model(model_dir)
    return [(model, info.get("backbone", {}))], None


def predict(model_dir: str | os.PathLike, inputs, top_k: int = 3, *, batch_size: int = 32) -> list[dict]:
    """One dict per image: ``path`` and ``top`` ([{category, score}], best first) with ``score_kind``,
    or ``path`` and ``error`` when the file could not be read; the other images are still predicted."""
    members, categories = load_predictor(model_dir)
    return predict_with_members(members, inputs, top_k, batch_size=batch_size, categories=categories)


def predict_with_model(model, backbone: dict, inputs, top_k: int = 3, *, batch_size: int = 32) -> list[dict]:
    """:func:`predict` for a model in memory (e.g. a zero-shot one) and its backbone description."""
    return predict_with_members([(model, backbone)], inputs, top_k, batch_size=batch_size)


def _backbone_key(backbone: dict) -> str:
    return json.dumps([backbone.get("spec"), bool(backbone.get("pretrained", True)), backbone.get("tta")])


def predict_with_members(members: list[tuple[object, dict]], inputs, top_k: int = 3, *, batch_size: int = 32,
                         categories=None) -> list[dict]:
    """:func:`predict` for ``[(model, backbone)]``: several members' probabilities are averaged over
    ``categories``; each distinct backbone embeds the images once. An image fails if any backbone fails on it."""
    from pintopic.classify.ensemble import averaged_probabilities
    from pintopic.classify.estimators import class_scores
    from pintopic.features.embed import embed_images
    from pintopic.predict.inputs import expand_inputs

    paths = expand_inputs(inputs)
    if not paths:
        return []
    features: dict[str, np.ndarray] = {}
    failed: dict[int, str] = {}
    for _, backbone in members:
        key = _backbone_key(backbone)
        if key not in features:
            features[key], errors = embed_images(backbone["spec"], paths, pretrained=bool(backbone.get("pretrained", True)),
                                                 tta=backbone.get("tta"), batch_size=batch_size)
            for index, status, detail in errors:
                failed.setdefault(index, f"{status}: {detail}")
    predictions: list[dict] = [{"path": path} for path in paths]
    good = [i for i in range(len(paths)) if i not in failed and all(np.isfinite(X[i]).all() for X in features.values())]
    for index in range(len(paths)):
        if index not in good:
            predictions[index]["error"] = failed.get(index, "no features could be computed")
    if not good:
        return predictions
    if len(members) == 1:
        model, backbone = members[0]
        scores, kind = class_scores(model, features[_backbone_key(backbone)][good])
        classes = model.classes_
    else:
        classes = np.asarray(categories)
        scores = averaged_probabilities([(model.predict_proba(features[_backbone_key(backbone)][good]), model.classes_)
                                         for model, backbone in members], classes)
        kind = "probability"
    order = np.argsort(-scores, axis=1, kind="stable")[:, :max(1, top_k)]
    for row, index in enumerate(good):
        predictions[index]["score_kind"] = kind
        predictions[index]["top"] = [{"category": str(classes[c]), "score": float(scores[row, c])} for c in order[row]]
    return predictions


