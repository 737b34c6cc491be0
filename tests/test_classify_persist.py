"""Fitted models are saved without pickle, reload to identical predictions, and crafted files are refused."""
from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

from pintopic.classify.estimators import build_classifier, class_scores
from pintopic.classify.persist import MODEL_ARRAYS, MODEL_JSON, description_checksum, load_model, save_model
from pintopic.errors import PintopicError


def fitted(name: str, params: dict):
    rng = np.random.default_rng(0)
    y = np.array(["cat", "dog", "fox"])[rng.integers(0, 3, 150)]
    X = (rng.normal(size=(3, 8))[np.searchsorted(["cat", "dog", "fox"], y)] * 2 + rng.normal(size=(150, 8))).astype(np.float32)
    return build_classifier(name, params, seed=0).fit(X, y), X


@pytest.mark.parametrize("name, params", [("knn", {"k": 5}), ("lsvm", {"C": 1.0}), ("nn", {"batch_size": 32})])
def test_saved_model_reloads_and_predicts_identically(tmp_path, name, params):
    model, X = fitted(name, params)
    save_model(model, tmp_path / "model", {"classifier": name, "categories": list(model.classes_)})
    loaded, info = load_model(tmp_path / "model")
    assert info["classifier"] == name
    assert np.array_equal(loaded.predict(X), model.predict(X))
    assert np.array_equal(class_scores(loaded, X)[0], class_scores(model, X)[0])
    assert list(loaded.classes_) == ["cat", "dog", "fox"]


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_renamed_as_model_files_is_refused_and_never_runs(tmp_path):
    model, _ = fitted("knn", {"k": 5})
    folder = tmp_path / "model"
    save_model(model, folder, {"classifier": "knn"})
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(str(marker)))
    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered)
    (tampered / MODEL_ARRAYS).write_bytes(payload)
    with pytest.raises(PintopicError, match="checksum"):
        load_model(tampered)
    # even with the checksum forged to match, np.load(allow_pickle=False) refuses the pickle
    import hashlib
    import json

    info = json.loads((tampered / MODEL_JSON).read_text())
    info["arrays_sha256"] = hashlib.sha256(payload).hexdigest()
    info["description_sha256"] = description_checksum(info)  # a deliberate attacker forges both checksums
    (tampered / MODEL_JSON).write_text(json.dumps(info))
    with pytest.raises(PintopicError, match="not a valid array archive"):
        load_model(tampered)
    (tampered / MODEL_JSON).write_bytes(payload)
    with pytest.raises(PintopicError, match="not a valid pintopic model description"):
        load_model(tampered)
    assert not marker.exists()


def test_disallowed_class_and_truncated_files_are_refused(tmp_path):
    import json

    model, _ = fitted("lsvm", {"C": 1.0})
    folder = tmp_path / "model"
    save_model(model, folder, {"classifier": "lsvm"})
    info = json.loads((folder / MODEL_JSON).read_text())
    info["steps"][1]["class"] = "os.system"
    (folder / MODEL_JSON).write_text(json.dumps(info))
    with pytest.raises(PintopicError, match="does not match its checksum"):
        load_model(folder)
    info["description_sha256"] = description_checksum(info)
    (folder / MODEL_JSON).write_text(json.dumps(info))
    with pytest.raises(PintopicError, match="allow-list"):
        load_model(folder)
    save_model(model, folder, {"classifier": "lsvm"})
    data = (folder / MODEL_ARRAYS).read_bytes()
    (folder / MODEL_ARRAYS).write_bytes(data[: len(data) // 2])
    with pytest.raises(PintopicError, match="tampered or truncated"):
        load_model(folder)
    text = (folder / MODEL_JSON).read_text()
    (folder / MODEL_JSON).write_text(text[: len(text) // 2])
    with pytest.raises(PintopicError, match="unreadable JSON"):
        load_model(folder)
    with pytest.raises(PintopicError, match="not a model folder"):
        load_model(tmp_path / "nowhere")
