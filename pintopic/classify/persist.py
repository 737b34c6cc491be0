"""Fitted pipelines saved without pickle: arrays in ``model.npz`` (loaded with ``allow_pickle=False``) and
a ``model.json`` naming each step's class from an explicit allow-list with its plain JSON parameters.

Loading therefore never executes code from the files; a file that is not exactly what was written
(tampered, truncated, or a pickle renamed) is refused with a :class:`PintopicError`. ``model.json`` carries
``description_sha256``, a checksum of everything else in it (the backbone, its preprocessing, the feature
key, the categories), and its categories and dimensions are cross-checked against the arrays, so an edited
description is refused too; ``predict`` also checks the backbone it builds against the recorded one
(:func:`pintopic.features.embed.check_backbone`).
"""
from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

from pintopic.classify import catalog
from pintopic.errors import PintopicError
from pintopic.safeio import UnreadableFileError, read_json_file, read_regular

MODEL_JSON = "model.json"
MODEL_ARRAYS = "model.npz"
DESCRIPTION_SHA256 = "description_sha256"
#: Largest model.json read (a description is a few KB; this only stops a planted giant file).
MAX_DESCRIPTION_BYTES = 16 * 1024**2
FORMAT = "pintopic-model"
FORMAT_VERSION = 1


def saver(class_name: str):
    """How a model step of this class is saved and restored; only the catalog's classes (an allow-list) have one."""
    import importlib

    from pintopic.classify.scaling import SAVERS as scaling

    if class_name in scaling:
        return scaling[class_name]
    for item in catalog.ENTRIES.values():
        if class_name in item.saved:
            return importlib.import_module(item.module).SAVERS[class_name]
    allowed = sorted({*scaling, *(name for item in catalog.ENTRIES.values() for name in item.saved)})
    raise PintopicError(f"model step class {class_name!r} is not on the allow-list {allowed}")


def _json_params(estimator, step_saver) -> dict:
    params = {}
    for key in step_saver.params:
        value = estimator.get_params()[key]
        params[key] = list(value) if isinstance(value, tuple) else (value.item() if hasattr(value, "item") else value)
    return params


def _restore(kind: str, params: dict, arrays: dict[str, np.ndarray]):
    """A fitted step from its saved parameters and arrays; only the catalog's classes (an allow-list) load."""
    step_saver = saver(kind)
    params = {key: (tuple(value) if key in step_saver.list_params else value) for key, value in params.items()
              if key in step_saver.params}
    return step_saver.restore(step_saver.cls(**params), arrays)


def save_model(pipeline, folder: str | Path, info: dict) -> None:
    """Write ``model.npz`` then ``model.json`` (written last; it holds the arrays' checksum and ``info``)."""
    from pintopic.runio import write_bytes

    folder = Path(folder)
    steps, arrays = [], {}
    for step_name, estimator in pipeline.steps:
        kind = type(estimator).__name__
        step_saver = saver(kind)
        step_arrays = step_saver.arrays(estimator)
        for key, value in step_arrays.items():
            value = np.asarray(value)
            if value.dtype == object:
                value = value.astype(str)
            arrays[f"{step_name}.{key}"] = value
        steps.append({"name": step_name, "class": kind, "params": _json_params(estimator, step_saver), "arrays": sorted(step_arrays)})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    write_bytes(folder / MODEL_ARRAYS, data)
    write_model_json(folder, {"format": FORMAT, "format_version": FORMAT_VERSION, "steps": steps,
                              "arrays_sha256": hashlib.sha256(data).hexdigest(), **info})


def description_checksum(info: dict) -> str:
    """sha256 of a model description without its own checksum field (canonical JSON, so key order does not matter)."""
    from pintopic.runio import canonical_json

    return hashlib.sha256(canonical_json({k: v for k, v in info.items() if k != DESCRIPTION_SHA256}).encode()).hexdigest()


def write_model_json(folder: str | Path, info: dict) -> None:
    """Write ``model.json`` with its :func:`description_checksum` (pairs and ensembles alike)."""
    from pintopic.runio import write_json

    write_json(Path(folder) / MODEL_JSON, {**info, DESCRIPTION_SHA256: description_checksum(info)})


def read_model_info(folder: str | Path) -> dict:
    """``model.json`` of a model folder, checked to be a pintopic model description."""
    path = Path(folder) / MODEL_JSON
    if not path.exists():
        raise PintopicError(f"{folder} is not a model folder (no {MODEL_JSON}); models are under RUN/results/models/")
    try:
        info = read_json_file(path, max_bytes=MAX_DESCRIPTION_BYTES, what=MODEL_JSON)
    except UnreadableFileError as error:
        raise PintopicError(f"{path} is not a valid pintopic model description (unreadable JSON: {error.reason})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("format_version") != FORMAT_VERSION:
        raise PintopicError(f"{path} is not a pintopic model description (format {FORMAT!r} v{FORMAT_VERSION})")
    recorded = info.get(DESCRIPTION_SHA256)
    if recorded is not None and recorded != description_checksum(info):  # models saved before the checksum have none
        raise PintopicError(f"{path} does not match its checksum (edited or damaged): its backbone, categories or "
                            "settings cannot be trusted; refit the model with `pintopic evaluate`")
    return info


def load_model(folder: str | Path):
    """``(pipeline, info)`` from a model folder; refuses anything but the exact files :func:`save_model` wrote."""
    from sklearn.pipeline import Pipeline

    folder = Path(folder)
    info = read_model_info(folder)
    array_path = folder / MODEL_ARRAYS
    if not array_path.exists():
        raise PintopicError(f"{folder} lacks {MODEL_ARRAYS}")
    try:
        data = read_regular(array_path)
    except UnreadableFileError as error:
        raise PintopicError(f"{array_path}: {error.reason}") from None
    if hashlib.sha256(data).hexdigest() != info.get("arrays_sha256"):
        raise PintopicError(f"{array_path} does not match the checksum in {MODEL_JSON} (tampered or truncated); refit the model")
    if not data.startswith(b"PK\x03\x04"):
        raise PintopicError(f"{array_path} is not a valid array archive (a .npz is a zip file; this one starts with {data[:8]!r})")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise PintopicError(f"{array_path} is not a valid array archive ({error})") from None
    try:
        steps = []
        for step in info["steps"]:
            step_arrays = {key: arrays[f"{step['name']}.{key}"] for key in step["arrays"]}
            steps.append((str(step["name"]), _restore(str(step["class"]), step["params"], step_arrays)))
        pipeline = Pipeline(steps)
        n_features = getattr(steps[0][1], "n_features_in_", None)
        if n_features is not None:  # arrays of mismatched shapes fail here, not in the user's first predict
            pipeline.predict(np.zeros((1, int(n_features)), dtype=np.float32))
        _cross_check(info, pipeline, n_features)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise PintopicError(f"{folder}: model description is inconsistent with its arrays ({error!r})") from None
    return pipeline, info


def _cross_check(info: dict, pipeline, n_features) -> None:
    """The description's categories and feature dimension must be the arrays' (raises ValueError)."""
    categories = info.get("categories")
    if categories is not None and list(categories) != [str(c) for c in pipeline.classes_]:
        raise ValueError(f"categories {categories} are not the model's classes {[str(c) for c in pipeline.classes_]}")
    dim = (info.get("backbone") or {}).get("dim")
    if dim is not None and n_features is not None and int(dim) != int(n_features):
        raise ValueError(f"backbone dim {dim} is not the model's {n_features} input features")
