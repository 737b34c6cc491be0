"""Zero-shot classification from category names alone, with an open_clip model's text tower.

Each category's display name is put into every prompt template; the normalised text embeddings are
averaged over templates (prompt ensembling) and renormalised. An image goes to the category whose text
embedding has the highest cosine similarity with its image embedding. No training image is needed.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from pintopic.classify.saver import Saver
from pintopic.errors import PintopicError


def _default_templates() -> tuple[str, ...]:
    from pintopic.classify.catalog import ENTRIES

    return tuple(ENTRIES["zeroshot"].grid["templates"][0])


#: The prompt templates used unless configured (``[classify.grids] zeroshot = {templates = [[...]]}``).
DEFAULT_TEMPLATES: tuple[str, ...] = _default_templates()


def _unit_rows(matrix) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


class ZeroShotClassifier(ClassifierMixin, BaseEstimator):
    """Nearest text embedding by cosine similarity; ``predict_proba`` is a softmax at ``logit_scale``.

    ``class_embeddings`` (K x D) and ``classes`` (K names) come from the text tower; :meth:`fit` ignores
    its data (zero-shot), so it can stand in any pipeline or grid search unchanged.
    """

    def __init__(self, class_embeddings=None, classes=None, logit_scale: float = 100.0):
        self.class_embeddings = class_embeddings
        self.classes = classes
        self.logit_scale = logit_scale

    def fit(self, X=None, y=None) -> ZeroShotClassifier:
        if self.class_embeddings is None or self.classes is None:
            raise PintopicError("a zero-shot classifier needs class_embeddings and classes (from the text tower)")
        return self.set_class_embeddings(self.class_embeddings, self.classes)

    def set_class_embeddings(self, class_embeddings, classes) -> ZeroShotClassifier:
        """Install the (renormalised) text embeddings as the fitted state."""
        embeddings = _unit_rows(class_embeddings)
        if embeddings.shape[0] != len(classes):
            raise PintopicError(f"{embeddings.shape[0]} class embeddings for {len(classes)} classes")
        self.class_embeddings_ = embeddings
        self.classes_ = np.asarray(classes)
        self.n_features_in_ = embeddings.shape[1]
        return self

    def decision_function(self, X) -> np.ndarray:
        return _unit_rows(X) @ self.class_embeddings_.T

    def predict_proba(self, X) -> np.ndarray:
        logits = self.logit_scale * self.decision_function(X)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]


def text_class_embeddings(spec: str, categories: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES, *,
                          pretrained: bool = True, weights: str | None = None) -> np.ndarray:
    """(K x D) prompt-ensembled, L2-normalised text embeddings of the categories' display names."""
    import open_clip
    import torch

    from pintopic.categories import display_name
    from pintopic.features.builder import openclip_model
    from pintopic.features.registry import resolve_backbone

    backbone = resolve_backbone(spec)
    if backbone.library != "openclip":
        raise PintopicError(f"zero-shot needs an openclip:<arch>/<tag> backbone with a text tower, not {spec!r}")
    templates = [t for t in templates if "{}" in t]
    if not templates:
        raise PintopicError("zero-shot prompt templates must each contain {} for the category name")
    model, _ = openclip_model(backbone, pretrained, weights)
    tokenizer = open_clip.get_tokenizer(backbone.model)
    rows = []
    with torch.inference_mode():
        for category in categories:
            tokens = tokenizer([template.format(display_name(str(category))) for template in templates])
            embedded = _unit_rows(model.encode_text(tokens).float().numpy())
            rows.append(embedded.mean(axis=0))
    return _unit_rows(np.stack(rows)).astype(np.float32)


def zero_shot_pipeline(spec: str, categories: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES, *,
                       pretrained: bool = True, weights: str | None = None):
    """A fitted one-step Pipeline classifying open_clip image embeddings into ``categories``."""
    from sklearn.pipeline import Pipeline

    categories = sorted(str(c) for c in categories)
    embeddings = text_class_embeddings(spec, categories, templates, pretrained=pretrained, weights=weights)
    return Pipeline([("model", ZeroShotClassifier(embeddings, np.asarray(categories)).fit())])


def zero_shot_search(spec: str, X_train, y_train, grid: dict, folds, *, pretrained: bool = True,
                     weights: str | None = None) -> dict:
    """The grid search's contract for ``zeroshot``: each template set scored on every validation fold.

    Nothing is fitted on the training rows; they only choose among template sets, as CV would.
    """
    from sklearn.metrics import f1_score

    categories = sorted({str(c) for c in y_train})
    y_train = np.asarray(y_train).astype(str)
    template_sets = [list(t) for t in grid.get("templates", [list(DEFAULT_TEMPLATES)])]
    results, pipelines = [], []
    for templates in template_sets:
        pipeline = zero_shot_pipeline(spec, categories, templates, pretrained=pretrained, weights=weights)
        predicted = pipeline.predict(X_train)
        fold_scores = [float(f1_score(y_train[val], predicted[val], average="macro")) for _, val in folds]
        results.append({"params": {"templates": templates}, "mean_f1_macro": float(np.mean(fold_scores)),
                        "std_f1_macro": float(np.std(fold_scores)), "fold_f1_macro": fold_scores})
        pipelines.append(pipeline)
    best = int(np.argmax([r["mean_f1_macro"] for r in results]))
    return {"best_params": results[best]["params"], "cv_f1_macro": results[best]["mean_f1_macro"],
            "cv_results": results, "model": pipelines[best]}


def search(X_train, y_train, grid: dict, folds, context, backbone: dict) -> dict:
    """The catalog's search hook: the backbone's own text tower scores each template set (see :func:`zero_shot_search`)."""
    return zero_shot_search(backbone["spec"], X_train, y_train, grid, folds, pretrained=bool(backbone.get("pretrained", True)))


def _restore(model, arrays: dict):
    return model.set_class_embeddings(arrays["class_embeddings_"], arrays["classes_"])


SAVERS = {"ZeroShotClassifier": Saver(
    cls=lambda **params: ZeroShotClassifier(**params), params=("logit_scale",),
    arrays=lambda model: {"class_embeddings_": model.class_embeddings_, "classes_": model.classes_},
    restore=_restore)}
