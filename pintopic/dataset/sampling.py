"""Seeded, stable per-category sampling of ``ok`` rows.

Within a category, rows are ranked by ``sha256(f"{seed}\\0{category}\\0{image_id}")`` and the first
``per_category`` are taken. The choice therefore depends only on the seed, the category and the set of
``ok`` image ids in it -- not on file order, other categories or the machine -- and raising
``per_category`` from 50 to 100 keeps the first 50 (the feature stage can reuse their vectors).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable


def rank_key(seed: int, category: str, image_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{category}\0{image_id}".encode("utf-8", "backslashreplace")).digest()


def select_sample(ok_rows: Iterable[tuple[str, str]], *, per_category: int | None, min_per_category: int,
                  seed: int) -> tuple[list[str], dict[str, int], dict[str, int]]:
    """Choose the sample from ``(image_id, category)`` pairs of ``ok`` rows.

    Returns (selected image ids sorted, categories left out {name: ok count}, sampled count per category).
    """
    by_category: dict[str, list[str]] = {}
    for image_id, category in ok_rows:
        by_category.setdefault(category, []).append(image_id)
    selected: list[str] = []
    left_out: dict[str, int] = {}
    sampled: dict[str, int] = {}
    for category in sorted(by_category):
        ids = by_category[category]
        if len(ids) < min_per_category:
            left_out[category] = len(ids)
            continue
        ranked = sorted(ids, key=lambda image_id: rank_key(seed, category, image_id))
        chosen = ranked if per_category is None else ranked[:per_category]
        sampled[category] = len(chosen)
        selected.extend(chosen)
    selected.sort()
    return selected, left_out, sampled
