"""Saved models, beyond tests/test_classify_persist.py: files crafted to pass the checksum are still refused
with a clear error, and an object array (a pickle inside the archive) never runs its payload.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from test_classify_persist import _Payload, fitted

from pintopic.classify.persist import MODEL_ARRAYS, MODEL_JSON, description_checksum, load_model, save_model
from pintopic.errors import PintopicError


def _forge(folder: Path, data: bytes) -> None:
    """Replace model.npz with ``data`` and make model.json's checksums agree, as a deliberate attacker would."""
    (folder / MODEL_ARRAYS).write_bytes(data)
    info = json.loads((folder / MODEL_JSON).read_text())
    info["arrays_sha256"] = hashlib.sha256(data).hexdigest()
    info["description_sha256"] = description_checksum(info)
    (folder / MODEL_JSON).write_text(json.dumps(info))


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture
def saved(tmp_path):
    model, X = fitted("nn", {"batch_size": 32})
    folder = tmp_path / "model"
    save_model(model, folder, {"classifier": "nn"})
    with np.load(folder / MODEL_ARRAYS) as archive:
        arrays = {key: archive[key] for key in archive.files}
    return folder, arrays


def test_object_array_in_the_archive_is_refused_without_running_its_payload(saved, tmp_path):
    folder, arrays = saved
    marker = tmp_path / "pwned"
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(str(marker))  # saving pickles it; loading with pickle would create the marker
    _forge(folder, _npz(**{**arrays, "scale.mean_": payload}))
    with pytest.raises(PintopicError, match="not a valid array archive"):
        load_model(folder)
    assert not marker.exists()


def test_truncated_archive_with_a_forged_checksum_is_a_clear_error(saved):
    folder, _ = saved
    data = (folder / MODEL_ARRAYS).read_bytes()
    _forge(folder, data[: len(data) // 2])
    with pytest.raises(PintopicError, match="not a valid array archive"):
        load_model(folder)


def test_arrays_of_the_wrong_shape_are_refused_at_load_not_at_predict(saved):
    folder, arrays = saved
    _forge(folder, _npz(**{**arrays, "model.coefs_0": arrays["model.coefs_0"][:3]}))
    with pytest.raises(PintopicError, match="inconsistent with its arrays"):
        load_model(folder)
    _forge(folder, _npz(**{key: value for key, value in arrays.items() if key != "model.intercepts_1"}))
    with pytest.raises(PintopicError, match="inconsistent with its arrays"):
        load_model(folder)
