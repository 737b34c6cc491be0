"""``pintopic predict --zero-shot``: top-k of given category names for images, with no training image at all."""
from __future__ import annotations

import os
from collections.abc import Sequence

from pintopic.errors import PintopicError


def zero_shot_predict(spec: str, categories: Sequence[str], images: Sequence[str | os.PathLike], *, top_k: int = 3,
                      templates: Sequence[str] | None = None, pretrained: bool = True,
                      weights: str | None = None) -> list[dict]:
    """``predict``'s output for image files without any training image: top-k of the given categories."""
    from pintopic.categories import normalize_category
    from pintopic.classify.zeroshot import DEFAULT_TEMPLATES, zero_shot_pipeline
    from pintopic.predict.predictor import predict_with_model

    categories = sorted({normalize_category(c) for c in categories if str(c).strip()})
    if len(categories) < 2:
        raise PintopicError("zero-shot needs at least two categories (e.g. --categories food_drink,animals,travel)")
    pipeline = zero_shot_pipeline(spec, categories, templates or DEFAULT_TEMPLATES, pretrained=pretrained, weights=weights)
    return predict_with_model(pipeline, {"spec": spec, "pretrained": pretrained}, images, top_k)
