"""Fitted pipelines saved without pickle: arrays in ``model.npz`` (loaded with ``allow_pickle=False``) and
a ``model.json`` naming each step's class from an explicit allow-list with its plain JSON parameters.

Loading therefore never executes code from the files; a file that is not exactly what was written
(tampered, truncated, or a pickle renamed) is refused with a :class:`PintopicError`.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from pintopic.errors import PintopicError

MODEL_JSON = "model.json"
MODEL_ARRAYS = "model.npz"
FORMAT = "pintopic-model"
FORMAT_VERSION = 1

#: Per allowed class: the constructor parameters kept (JSON scalars or lists only).
ALLOWED_PARAMS: dict[str, tuple[str, ...]] = {
    "StandardScaler": ("with_mean", "with_std"),
    "KNeighborsClassifier": ("n_neighbors", "metric", "weights", "algorithm", "leaf_size", "p"),
    "SquaredHingeSVC": ("C", "tol", "max_iter"),
    "MLPClassifier": ("hidden_layer_sizes", "activation", "solver", "learning_rate_init", "batch_size", "max_iter",
                      "early_stopping", "validation_fraction", "n_iter_no_change", "random_state", "alpha"),
    "LogisticRegression": ("C", "max_iter", "tol", "random_state"),
    "SVC": ("C", "kernel", "gamma", "decision_function_shape", "random_state"),
    "ZeroShotClassifier": ("logit_scale",),
    "WeightedKNN": ("n_neighbors", "temperature", "whiten"),
    "ShrinkageLDA": ("shrinkage", "n_components", "random_state"),
}
#: Fitted SVC state that libsvm's predict reads (public and private attributes alike).
SVC_ARRAYS = ("support_", "support_vectors_", "_n_support", "_dual_coef_", "_intercept_", "_probA", "_probB",
              "classes_", "shape_fit_", "fit_status_")


#: Where each allowed class lives (imported only when a model uses it).
CLASS_MODULES = {
    "StandardScaler": "sklearn.preprocessing", "KNeighborsClassifier": "sklearn.neighbors",
    "SquaredHingeSVC": "pintopic.classify.estimators", "MLPClassifier": "sklearn.neural_network",
    "LogisticRegression": "sklearn.linear_model", "SVC": "sklearn.svm",
    "ZeroShotClassifier": "pintopic.classify.zeroshot", "WeightedKNN": "pintopic.classify.beyond",
    "ShrinkageLDA": "pintopic.classify.beyond",
}


def _estimator_class(name: str):
    import importlib

    if name not in ALLOWED_PARAMS:
        raise PintopicError(f"model step class {name!r} is not on the allow-list {sorted(ALLOWED_PARAMS)}")
    return getattr(importlib.import_module(CLASS_MODULES[name]), name)


def _fitted_arrays(estimator) -> dict[str, np.ndarray]:
    """The arrays that fully determine a fitted step's predictions."""
    kind = type(estimator).__name__
    if kind == "StandardScaler":
        return {"mean_": estimator.mean_, "scale_": estimator.scale_, "var_": estimator.var_,
                "n_samples_seen_": np.asarray(estimator.n_samples_seen_)}
    if kind == "KNeighborsClassifier":
        return {"fit_X": estimator._fit_X, "fit_y": estimator.classes_[estimator._y]}
    if kind == "WeightedKNN":
        whitening = {} if estimator.whitening_ is None else {"whitening_mean_": estimator.whitening_mean_,
                                                              "whitening_": estimator.whitening_}
        return {"fit_X": estimator.fit_X_, "fit_y": estimator.classes_[estimator.fit_y_], **whitening}
    if kind == "SquaredHingeSVC":
        return {"coef_": estimator.coef_, "intercept_": estimator.intercept_, "classes_": estimator.classes_}
    if kind == "MLPClassifier":
        arrays = {"classes_": estimator.classes_}
        for i, (coef, intercept) in enumerate(zip(estimator.coefs_, estimator.intercepts_)):
            arrays[f"coefs_{i}"], arrays[f"intercepts_{i}"] = coef, intercept
        return arrays
    if kind in ("LogisticRegression", "ShrinkageLDA"):
        return {"coef_": estimator.coef_, "intercept_": estimator.intercept_, "classes_": estimator.classes_}
    if kind == "SVC":
        return {name: np.asarray(getattr(estimator, name)) for name in SVC_ARRAYS} | {"_gamma": np.asarray(estimator._gamma)}
    if kind == "ZeroShotClassifier":
        return {"class_embeddings_": estimator.class_embeddings_, "classes_": estimator.classes_}
    raise PintopicError(f"cannot save a {kind}: not on the allow-list {sorted(ALLOWED_PARAMS)}")


def _restore(kind: str, params: dict, arrays: dict[str, np.ndarray]):
    estimator = _estimator_class(kind)(**params)
    if kind == "StandardScaler":
        estimator.mean_, estimator.scale_, estimator.var_ = arrays["mean_"], arrays["scale_"], arrays["var_"]
        estimator.n_samples_seen_ = arrays["n_samples_seen_"].item() if arrays["n_samples_seen_"].ndim == 0 else arrays["n_samples_seen_"]
        estimator.n_features_in_ = len(arrays["mean_"])
    elif kind == "KNeighborsClassifier":
        estimator.fit(arrays["fit_X"], arrays["fit_y"])
    elif kind == "WeightedKNN":
        estimator.set_fitted(arrays["fit_X"], arrays["fit_y"], arrays.get("whitening_mean_"), arrays.get("whitening_"))
    elif kind == "ShrinkageLDA":
        estimator.set_weights(arrays["coef_"], arrays["intercept_"], arrays["classes_"])
    elif kind == "SquaredHingeSVC":
        estimator.set_weights(np.vstack([arrays["coef_"].T, arrays["intercept_"][None, :]]), arrays["classes_"])
    elif kind == "LogisticRegression":
        estimator.coef_, estimator.intercept_, estimator.classes_ = arrays["coef_"], arrays["intercept_"], arrays["classes_"]
        estimator.n_features_in_ = estimator.coef_.shape[1]
        estimator.n_iter_ = np.zeros(1, dtype=np.int32)
    elif kind == "SVC":
        for name in SVC_ARRAYS:
            setattr(estimator, name, arrays[name])
        estimator.fit_status_ = int(arrays["fit_status_"])
        estimator.shape_fit_ = tuple(int(v) for v in arrays["shape_fit_"])
        estimator._gamma = float(arrays["_gamma"])
        estimator._sparse = False
        estimator.n_features_in_ = estimator.support_vectors_.shape[1]
    elif kind == "ZeroShotClassifier":
        estimator.set_class_embeddings(arrays["class_embeddings_"], arrays["classes_"])
    elif kind == "MLPClassifier":
        from sklearn.preprocessing import LabelBinarizer

        n_layers = sum(1 for key in arrays if key.startswith("coefs_"))
        estimator.coefs_ = [arrays[f"coefs_{i}"] for i in range(n_layers)]
        estimator.intercepts_ = [arrays[f"intercepts_{i}"] for i in range(n_layers)]
        estimator.n_layers_ = n_layers + 1
        estimator.n_outputs_ = estimator.coefs_[-1].shape[1]
        estimator.out_activation_ = "softmax" if estimator.n_outputs_ > 1 else "logistic"
        estimator.n_features_in_ = estimator.coefs_[0].shape[0]
        estimator._label_binarizer = LabelBinarizer().fit(arrays["classes_"])
        estimator.classes_ = estimator._label_binarizer.classes_
    return estimator


def _json_params(estimator) -> dict:
    params = {}
    for key in ALLOWED_PARAMS[type(estimator).__name__]:
        value = estimator.get_params()[key]
        params[key] = list(value) if isinstance(value, tuple) else (value.item() if hasattr(value, "item") else value)
    return params


def save_model(pipeline, folder: str | Path, info: dict) -> None:
    """Write ``model.npz`` then ``model.json`` (written last; it holds the arrays' checksum and ``info``)."""
    from pintopic.runio import write_bytes, write_json

    folder = Path(folder)
    steps, arrays = [], {}
    for step_name, estimator in pipeline.steps:
        kind = type(estimator).__name__
        _estimator_class(kind)
        step_arrays = _fitted_arrays(estimator)
        for key, value in step_arrays.items():
            value = np.asarray(value)
            if value.dtype == object:
                value = value.astype(str)
            arrays[f"{step_name}.{key}"] = value
        steps.append({"name": step_name, "class": kind, "params": _json_params(estimator), "arrays": sorted(step_arrays)})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    write_bytes(folder / MODEL_ARRAYS, data)
    write_json(folder / MODEL_JSON, {"format": FORMAT, "format_version": FORMAT_VERSION, "steps": steps,
                                     "arrays_sha256": hashlib.sha256(data).hexdigest(), **info})


def read_model_info(folder: str | Path) -> dict:
    """``model.json`` of a model folder, checked to be a pintopic model description."""
    path = Path(folder) / MODEL_JSON
    if not path.exists():
        raise PintopicError(f"{folder} is not a model folder (no {MODEL_JSON}); models are under RUN/results/models/")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise PintopicError(f"{path} is not a valid pintopic model description (unreadable JSON: {error})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("format_version") != FORMAT_VERSION:
        raise PintopicError(f"{path} is not a pintopic model description (format {FORMAT!r} v{FORMAT_VERSION})")
    return info


def load_model(folder: str | Path):
    """``(pipeline, info)`` from a model folder; refuses anything but the exact files :func:`save_model` wrote."""
    from sklearn.pipeline import Pipeline

    folder = Path(folder)
    info = read_model_info(folder)
    array_path = folder / MODEL_ARRAYS
    if not array_path.exists():
        raise PintopicError(f"{folder} lacks {MODEL_ARRAYS}")
    data = array_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != info.get("arrays_sha256"):
        raise PintopicError(f"{array_path} does not match the checksum in {MODEL_JSON} (tampered or truncated); refit the model")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise PintopicError(f"{array_path} is not a valid array archive ({error})") from None
    try:
        steps = []
        for step in info["steps"]:
            kind = step["class"]
            allowed = ALLOWED_PARAMS.get(kind)
            if allowed is None:
                raise PintopicError(f"model step class {kind!r} is not on the allow-list {sorted(ALLOWED_PARAMS)}")
            params = {key: value for key, value in step["params"].items() if key in allowed}
            if "hidden_layer_sizes" in params:
                params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
            step_arrays = {key: arrays[f"{step['name']}.{key}"] for key in step["arrays"]}
            steps.append((str(step["name"]), _restore(kind, params, step_arrays)))
        pipeline = Pipeline(steps)
        n_features = getattr(steps[0][1], "n_features_in_", None)
        if n_features is not None:  # arrays of mismatched shapes fail here, not in the user's first predict
            pipeline.predict(np.zeros((1, int(n_features)), dtype=np.float32))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise PintopicError(f"{folder}: model description is inconsistent with its arrays ({error!r})") from None
    return pipeline, info
