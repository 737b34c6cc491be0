"""The feature stage end to end: store layout, reruns, failures, reuse, kill/resume, real-data quality."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image

from pintopic.features import (
    embed_images,
    extract,
    feature_store,
    list_stores,
    load_features,
)
from pintopic.runio import read_json

REPO = Path(__file__).resolve().parent.parent


def write_sample(run: Path, source: Path, files_by_category: dict[str, list[Path]]) -> Path:
    """A RUN/dataset/{manifest,sample}.parquet in the dataset stage's schema, for these files."""
    import pyarrow as pa

    from pintopic.runio import write_parquet

    rows = []
    for category, files in files_by_category.items():
        for path in files:
            relative = os.fsencode(path.relative_to(source))
            rows.append({
                "image_id": hashlib.sha1(relative).hexdigest(), "path": os.fsdecode(relative),
                "abspath": os.fsencode(path.resolve()), "user": None, "board": None, "pin": None,
                "category": category, "status": "ok", "reason_detail": "", "sha256": None, "width": None, "height": None,
            })
    table = pa.Table.from_pylist(rows)
    write_parquet(run / "dataset" / "manifest.parquet", table)
    write_parquet(run / "dataset" / "sample.parquet", table)
    return run


def tiny_run(tmp_path: Path, per_category: int = 6, categories=("red", "green", "blue")) -> Path:
    colors = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    source = tmp_path / "source"
    files = {
        name: [make_image(source / name / f"{i:03d}.jpg", color=colors[name], seed=c * 1000 + i, size=(40, 32))
               for i in range(per_category)]
        for c, name in enumerate(categories)
    }
    return write_sample(tmp_path / "run", source, files)


FAST = dict(pretrained=False, workers=0, progress=False, batch_size=4)


def test_extract_writes_an_aligned_sharded_store(tmp_path):
    run = tiny_run(tmp_path)
    (folder,) = extract(run, "lite0", shard_rows=5, **FAST)
    meta = read_json(folder / "meta.json")
    assert folder.name.startswith("lite0-") and folder.parent == run / "features"
    assert meta["n_rows"] == 18 and meta["dim"] == 1280 and meta["dtype"] == "float32"
    assert meta["n_shards"] == 4 and len(list(folder.glob("part-*.npy"))) == 4
    assert meta["runtime"] == "onnxruntime" and meta["failed"] == []
    assert meta["preprocessing"]["mean"] == [0.5, 0.5, 0.5] and meta["preprocessing"]["input_size"] == [3, 224, 224]
    ids, X = load_features(folder)
    assert list(ids) == sorted(ids) and X.shape == (18, 1280) and np.isfinite(X).all()
    assert len({row.tobytes() for row in X}) == 18  # different images, different vectors
    subset = [ids[7], ids[2]]
    sub_ids, sub_X = load_features(folder, subset)
    assert list(sub_ids) == subset and np.array_equal(sub_X, X[[7, 2]])
    assert list_stores(run) == {"lite0": folder} and feature_store(run, "lite0") == folder


def test_rerun_is_a_no_op_and_other_settings_get_their_own_store(tmp_path):
    run = tiny_run(tmp_path, per_category=2)
    (folder,) = extract(run, "lite0", **FAST)
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert extract(run, ["lite0"], **FAST) == [folder]
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    (half,) = extract(run, "lite0", dtype="float16", **FAST)
    assert half != folder and load_features(half)[1].dtype == np.float16
    np.testing.assert_allclose(load_features(half)[1], load_features(folder)[1], rtol=1e-2, atol=1e-2)


def test_a_file_broken_since_ingest_is_listed_and_left_out(tmp_path):
    run = tiny_run(tmp_path, per_category=3)
    broken = tmp_path / "source" / "green" / "001.jpg"
    broken.write_bytes(broken.read_bytes()[:60])
    (folder,) = extract(run, "lite0", shard_rows=4, **FAST)
    meta = read_json(folder / "meta.json")
    assert [entry["status"] for entry in meta["failed"]] == ["truncated"]
    failed_id = meta["failed"][0]["image_id"]
    ids, X = load_features(folder)
    assert meta["n_rows"] == 8 and failed_id not in set(ids) and X.shape == (8, 1280)
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    extract(run, "lite0", shard_rows=4, **FAST)  # failures are remembered, not retried forever
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps


def test_a_non_finite_vector_is_a_failure_never_a_stored_row(tmp_path, monkeypatch):
    import pintopic.features.steps as steps

    run = tiny_run(tmp_path, per_category=2)
    real = steps.embed_rows

    def first_row_nan(*args):
        vectors = real(*args)
        vectors[0] = np.nan
        return vectors

    monkeypatch.setattr(steps, "embed_rows", first_row_nan)  # the local engine runs the model in this process
    (folder,) = extract(run, "lite0", shard_rows=4, **FAST)
    meta = read_json(folder / "meta.json")
    assert [entry["status"] for entry in meta["failed"]] == ["truncated", "truncated"]  # row 0 of both batches
    assert all("NaN or infinite" in entry["reason"] for entry in meta["failed"])
    ids, X = load_features(folder)
    assert len(ids) == 4 and np.isfinite(X).all()


def test_a_grown_sample_reuses_stored_vectors(tmp_path, monkeypatch):
    from pintopic.features.preprocess import ImagePreprocessor

    run = tiny_run(tmp_path, per_category=3)
    (folder,) = extract(run, "lite0", shard_rows=4, **FAST)
    ids_before, X_before = load_features(folder)
    write_sample(run, tmp_path / "source", {
        name: sorted((tmp_path / "source" / name).glob("*.jpg")) + [
            make_image(tmp_path / "source" / name / f"new{i}.jpg", seed=500 + i, size=(40, 32)) for i in range(2)]
        for name in ("red", "green", "blue")})
    decoded = []
    original = ImagePreprocessor.__call__
    monkeypatch.setattr(ImagePreprocessor, "__call__", lambda self, path: decoded.append(path) or original(self, path))
    (again,) = extract(run, "lite0", shard_rows=4, **FAST)
    assert again == folder and len(decoded) == 6 and all(Path(p).name.startswith("new") for p in decoded)
    ids_after, X_after = load_features(folder)
    assert len(ids_after) == 15 and len(list(folder.glob("part-*.npy"))) == 4
    _, X_old_rows = load_features(folder, list(ids_before))
    assert np.array_equal(X_old_rows, X_before)


def test_a_shrunk_sample_drops_stale_shards_and_keeps_vectors(tmp_path):
    run = tiny_run(tmp_path, per_category=3)
    (folder,) = extract(run, "lite0", shard_rows=4, **FAST)
    ids_before, X_before = load_features(folder)
    keep = sorted((tmp_path / "source" / "red").glob("*.jpg"))
    write_sample(run, tmp_path / "source", {"red": keep})
    extract(run, "lite0", shard_rows=4, **FAST)
    ids_after, X_after = load_features(folder)
    assert len(ids_after) == 3 and sorted(p.name for p in folder.glob("*-0000*")) == [
        "failed-00000.json", "ids-00000.parquet", "part-00000.npy"]
    position = {image_id: row for row, image_id in enumerate(ids_before)}
    assert np.array_equal(X_after, X_before[[position[i] for i in ids_after]])


def test_flip_tta_is_its_own_store_and_averages_both_views(tmp_path):
    from pintopic.dataset import image_file, load_sample
    from pintopic.features.embed import prepared_backbone
    from pintopic.features.preprocess import ImagePreprocessor

    run = tiny_run(tmp_path, per_category=1)
    (plain,) = extract(run, "lite0", **FAST)
    (flipped,) = extract(run, "lite0", tta="flip", **FAST)
    assert plain != flipped and read_json(flipped / "meta.json")["tta"] == "flip"
    backbone, runner = prepared_backbone("lite0", pretrained=False)
    pixels = np.stack([ImagePreprocessor(backbone.preprocessing)(image_file(row)) for _, row in load_sample(run).iterrows()])
    expected = (runner(pixels) + runner(np.ascontiguousarray(pixels[..., ::-1]))) / 2
    np.testing.assert_allclose(load_features(flipped)[1], expected, atol=1e-5)
    assert not np.allclose(load_features(flipped)[1], load_features(plain)[1], atol=1e-5)


def test_embed_images_matches_the_store_and_reports_bad_files(tmp_path):
    run = tiny_run(tmp_path, per_category=2)
    (folder,) = extract(run, "lite0", **FAST)
    ids, X = load_features(folder)
    from pintopic.dataset import image_file, load_sample

    sample = load_sample(run)
    paths = [image_file(row) for _, row in sample.iterrows()]
    bad = tmp_path / "bad.jpg"
    bad.write_text("<html>not an image</html>")
    X_new, errors = embed_images("lite0", paths[:3] + [bad], pretrained=False)
    assert errors == [(3, "not_an_image", "an HTML page, not an image")]
    np.testing.assert_allclose(X_new[:3], X[:3], atol=1e-5)
    assert np.isnan(X_new[3]).all()


def test_missing_sample_gives_a_clear_error(tmp_path):
    from pintopic.errors import PintopicError

    with pytest.raises(PintopicError, match="ingest"):
        extract(tmp_path / "empty-run", "lite0", **FAST)


KILLABLE = """
import sys
from pintopic.features import extract
extract(sys.argv[1], "lite0", pretrained=False, workers=0, progress=False, batch_size=2, shard_rows=4)
"""


@pytest.mark.timeout(300)
def test_sigkill_then_rerun_gives_byte_identical_shards(tmp_path):
    run = tiny_run(tmp_path, per_category=30)  # 90 images, 23 shards
    folder_glob = run / "features"
    process = subprocess.Popen([sys.executable, "-c", KILLABLE, str(run)], cwd=REPO)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(folder_glob.glob("*/ids-00001.parquet")):
        if process.poll() is not None:
            pytest.fail(f"extraction ended (rc {process.returncode}) before it could be killed")
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    (folder,) = folder_glob.iterdir()
    assert not (folder / "meta.json").exists(), "the run finished before the kill; the test proves nothing"
    finished = {p.name: p.stat().st_mtime_ns for p in folder.glob("*-*.*")
                if (folder / ("part-" + p.name.split("-")[1].split(".")[0] + ".npy")).exists()
                and (folder / ("ids-" + p.name.split("-")[1].split(".")[0] + ".parquet")).exists()}
    assert len(finished) >= 2 * 3
    extract(run, "lite0", pretrained=False, workers=0, progress=False, batch_size=2, shard_rows=4)
    assert {name: (folder / name).stat().st_mtime_ns for name in finished} == finished  # not recomputed

    fresh_run = tmp_path / "fresh"
    (fresh_run / "dataset").mkdir(parents=True)
    for table in ("manifest.parquet", "sample.parquet"):
        (fresh_run / "dataset" / table).write_bytes((run / "dataset" / table).read_bytes())
    (fresh,) = extract(fresh_run, "lite0", pretrained=False, workers=0, progress=False, batch_size=2, shard_rows=4)
    assert fresh.name == folder.name
    resumed_files = sorted(p.name for p in folder.glob("*-*.*"))
    assert resumed_files == sorted(p.name for p in fresh.glob("*-*.*")) and len(resumed_files) == 3 * 23
    for name in resumed_files:
        if name.endswith(".npy"):
            assert (folder / name).read_bytes() == (fresh / name).read_bytes(), name
    assert np.array_equal(load_features(folder)[1], load_features(fresh)[1])


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_lite0_separates_natural_images_with_a_plain_knn(tmp_path, natural_images):
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier

    from pintopic.dataset import ingest

    run = tmp_path / "run"
    ingest(natural_images, run, per_category=50, seed=0, progress=False)
    (folder,) = extract(run, "lite0", progress=False, workers=1)
    from pintopic.dataset import load_sample

    sample = load_sample(run)
    ids, X = load_features(folder, list(sample["image_id"]))
    y = sample["category"].to_numpy()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    predicted = KNeighborsClassifier(n_neighbors=5).fit(X_train, y_train).predict(X_test)
    assert len(ids) == 400
    assert f1_score(y_test, predicted, average="macro") >= 0.95
