"""Feature fusion: a backbone named ``a+b+c`` is the concatenation of its components' stored vectors.

Nothing is written for a fusion: the vectors are assembled when loaded, from the component stores,
joined by image_id (only ids every component holds), each block L2-normalised so no backbone dominates
by scale. ``predict`` embeds images with every component backbone the same way
(:func:`pintopic.features.embed.embed_fused`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pintopic.errors import PintopicError


def l2_normalised(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero; NaN rows of failed images stay NaN)."""
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def fused_blocks(blocks: Sequence[np.ndarray]) -> np.ndarray:
    """A fusion's features: the components' blocks, each L2-normalised, side by side."""
    return np.hstack([l2_normalised(X) for X in blocks])


def component_stores(features_dir: Path, name: str, tta: str | None | bool = True) -> list[tuple[Path, dict]]:
    """``(folder, meta)`` of each component's newest complete store; ``tta`` (None, "flip") pins their TTA.

    With the default (``True``) the components must agree on TTA, so one fusion never mixes settings.
    """
    from pintopic.features.registry import fusion_components
    from pintopic.features.store import complete_stores

    parts = fusion_components(name)
    if parts is None:
        raise PintopicError(f"{name!r} is not a fusion name (a+b+...)")
    stores = complete_stores(features_dir)
    chosen = []
    for part in parts:
        found = [(folder, meta) for folder, meta in stores if meta.get("spec") == part
                 and (tta is True or (meta.get("tta") or None) == (tta or None))]
        if not found:
            raise PintopicError(f"fusion {name!r}: no complete store for component {part!r} in {features_dir}; "
                                f"run `pintopic extract RUN --backbone {name}`")
        chosen.append(found[-1])
    for setting, option in (("tta", "--tta"), ("precision", "--dtype")):
        values = {meta.get(setting) or (None if setting == "tta" else "fp32") for _, meta in chosen}
        if len(values) > 1:
            raise PintopicError(f"fusion {name!r}: component stores differ in {setting} ({sorted(map(str, values))}); "
                                f"extract them with the same {option}")
    return chosen


def fused_meta(name: str, components: list[tuple[Path, dict]], ids: Sequence[str]) -> dict:
    """A meta.json-like description of the fusion (what evaluate records and predict needs)."""
    from pintopic.features.registry import slug
    from pintopic.features.store import ids_checksum
    from pintopic.runio import settings_hash

    keys = [folder.name for folder, _ in components]
    first = components[0][1]
    return {
        "spec": name, "library": "fusion", "key": f"{slug(name)}-{settings_hash(keys, 8)}", "components": keys,
        "component_specs": [meta["spec"] for _, meta in components],
        "component_backbones": [{k: meta.get(k) for k in ("spec", "key", "dim", "tta", "pretrained", "weights_sha256",
                                                          "weights_source", "preprocessing", "precision", "quantization")}
                                for _, meta in components],
        "dim": int(sum(int(meta["dim"]) for _, meta in components)), "tta": first.get("tta"),
        "pretrained": all(meta.get("pretrained", True) for _, meta in components), "normalisation": "l2 per block",
        "n_rows": len(ids), "ids_sha256": ids_checksum(list(ids)),
    }


def fused_ids(components: list[tuple[Path, dict]]) -> list[str]:
    """Ids present in every component store, sorted (failures of any component drop the image)."""
    from pintopic.features.store import store_ids

    common = None
    for folder, _ in components:
        ids = set(store_ids(folder))
        common = ids if common is None else common & ids
    return sorted(common or ())


def load_fused(components: list[tuple[Path, dict]], ids: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, X)``: the L2-normalised component blocks side by side, rows joined by image_id."""
    from pintopic.features.store import load_features

    ids = fused_ids(components) if ids is None else list(ids)
    return np.asarray(ids, dtype=object), fused_blocks([load_features(folder, ids=ids)[1] for folder, _ in components])


def open_store(features_dir: Path, name: str) -> tuple[Path, dict]:
    """``(virtual folder, meta)`` of a fusion, for code that walks stores: the folder does not exist on disk."""
    components = component_stores(features_dir, name)
    meta = fused_meta(name, components, fused_ids(components))
    meta["component_folders"] = [str(folder) for folder, _ in components]
    return Path(features_dir) / meta["key"], meta


def store_ids_of(folder: Path, meta: dict) -> list[str]:
    """The ids a (real or fused) store holds."""
    from pintopic.features.store import store_ids

    if meta.get("library") == "fusion":
        return fused_ids([(Path(f), {}) for f in meta["component_folders"]])
    return store_ids(folder)


def load_store(folder: Path, meta: dict, ids: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``load_features`` for a real store, :func:`load_fused` for a fusion."""
    from pintopic.features.store import load_features

    if meta.get("library") == "fusion":
        return load_fused([(Path(f), {}) for f in meta["component_folders"]], ids)
    return load_features(folder, ids=ids)


def find_stores(features_dir: Path, backbones=None) -> list[tuple[Path, dict]]:
    """Complete feature stores ``(folder, meta)`` sorted by key; ``backbones`` filters by spec or key (``a+b``: a fusion)."""
    from pintopic.features.store import complete_stores

    stores = sorted(complete_stores(features_dir), key=lambda store: store[0].name)
    if not stores:
        raise PintopicError(f"no feature stores under {features_dir}; run `pintopic extract RUN` first")
    if backbones is None:
        return stores
    chosen = []
    for name in backbones:
        if "+" in str(name):  # a fusion: assembled from its component stores when loaded
            chosen.append(open_store(Path(features_dir), name))
            continue
        matches = [(folder, meta) for folder, meta in stores if name in (meta.get("spec"), folder.name)]
        if not matches:
            available = ", ".join(f"{meta.get('spec')} ({folder.name})" for folder, meta in stores)
            raise PintopicError(f"no feature store for backbone {name!r}; available: {available}")
        chosen += [store for store in matches if store not in chosen]
    return chosen
