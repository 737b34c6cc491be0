"""The pixel cache ingest writes for extraction: exact pixels and features, reuse, resume, fallbacks, failures."""
from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import make_image
from PIL import Image

from pintopic.dataset import ingest
from pintopic.dataset.manifest import image_tasks
from pintopic.features import extract, load_features
from pintopic.features import pixel_cache as pc
from pintopic.features.preprocess import ImagePreprocessor
from pintopic.features.runtime import cpu_threads
from pintopic.runio import read_json

FAST = dict(pretrained=False, workers=0, progress=False, batch_size=4)
BOTH = ["lite0", "effnetv2_b0"]  # 224 crop of 256 (JPEG draft 512) and 192 crop of 219 (draft 438)


@pytest.fixture(scope="module")
def preprocessings():
    return {name: pc.backbone_preprocessing(name) for name in BOTH}


@pytest.fixture
def source(tmp_path):
    """Small JPEGs and PNGs, an RGBA PNG (decode-cache copy) and a JPEG the two drafts decode differently."""
    root = tmp_path / "source"
    for c, name in enumerate(("red", "green")):
        for i in range(3):
            make_image(root / name / f"{i}.jpg", seed=c * 10 + i, size=(60, 44))
            make_image(root / name / f"{i}.png", seed=c * 10 + i + 5, size=(50, 64))
    rgba = np.random.default_rng(7).integers(0, 256, (80, 90, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "red" / "alpha.png")
    # 904 // 2 = 452: below Lite0's draft size 512 (full decode), above EfficientNetV2-B0's 438 (half scale)
    make_image(root / "green" / "draft.jpg", seed=99, size=(1000, 904))
    return root


def _ingest(source, run, pixel_cache=(), pixel_cache_limit=None, **settings):
    """Ingest, then build the pixel caches as ``pintopic ingest --pixel-cache`` and ``pintopic run`` do."""
    record = ingest(source, run, min_per_category=1, progress=False, workers=1, **settings)
    if pixel_cache:
        pc.build_pixel_caches(run, pixel_cache, workers=1, progress=False, max_bytes=pixel_cache_limit)
    return record


def _folders(run):
    return sorted((run / "dataset" / "pixels").glob("*/meta.json"))


@pytest.mark.timeout(180)
def test_cached_pixels_and_features_equal_decoding(source, tmp_path, preprocessings):
    run = tmp_path / "run"
    _ingest(source, run, pixel_cache="lite0,effnetv2_b0")
    tasks = image_tasks(run, all_rows=False)
    assert any(task.read_from for task in tasks)  # the RGBA file goes through the decode cache, as extraction does
    for name, preprocessing in preprocessings.items():
        cache = pc.open_pixel_cache(run, preprocessing)
        assert cache is not None and cache.meta["backbones"] == [name] and cache.meta["failed"] == 0
        assert cache.pixels.shape == (len(tasks), *preprocessing.input_size)
        preprocess = ImagePreprocessor(preprocessing)
        for task in tasks:
            assert np.array_equal(cache.get([task.image_id])[0], preprocess(task.decode_path)), (name, task.path)

    two_chunks = {**FAST, "batch_size": 16}  # with 2 cores, each single-threaded session runs its own chunks of it
    (folder,) = extract(run, "lite0", **two_chunks)
    meta = read_json(folder / "meta.json")
    assert meta["images_from_pixel_cache"] == len(tasks) and meta["pixel_cache"].startswith("224x224-")
    assert meta["runtime_layout"] == f"{cpu_threads()} session(s) x 1 thread(s)"
    ids, X = load_features(folder)
    shutil.rmtree(run / "features")
    shutil.rmtree(run / "dataset" / "pixels")
    (folder,) = extract(run, "lite0", **two_chunks)
    meta = read_json(folder / "meta.json")
    assert meta["images_from_pixel_cache"] == 0 and meta["runtime_layout"] == f"1 session(s) x {cpu_threads()} thread(s)"
    ids_decoded, X_decoded = load_features(folder)
    assert list(ids) == list(ids_decoded) and np.array_equal(X, X_decoded)


def test_split_sessions_give_the_same_features():
    from pintopic.features.embed import prepared_backbone

    backbone, plain = prepared_backbone("lite0", pretrained=False, device="cpu")
    _, split = prepared_backbone("lite0", pretrained=False, device="cpu", sessions=2)
    assert split.layout == f"{min(2, cpu_threads())} session(s) x {max(1, cpu_threads() // 2)} thread(s)"
    batch = np.random.default_rng(0).integers(0, 256, (20, 3, 224, 224), dtype=np.uint8)  # chunks of 8, 8 and 4
    assert np.array_equal(split(batch), plain(batch)) and np.array_equal(split(batch[:3]), plain(batch[:3]))


def test_each_file_is_decoded_once_per_distinct_draft_scale(source, monkeypatch, preprocessings):
    import pintopic.imageio

    calls = []
    original = pintopic.imageio.load_rgb
    monkeypatch.setattr(pintopic.imageio, "load_rgb", lambda path, **kw: calls.append(kw) or original(path, **kw))
    both = pc.MultiPreprocessor(list(preprocessings.values()))
    for path, decodes in ((source / "green" / "draft.jpg", 2), (source / "red" / "0.jpg", 1), (source / "red" / "alpha.png", 1)):
        calls.clear()
        flat = both(path)
        assert len(calls) == decodes, path
        crops = [ImagePreprocessor(p)(path).ravel() for p in preprocessings.values()]
        assert np.array_equal(flat, np.concatenate(crops))


@pytest.mark.timeout(120)
def test_rerun_is_a_no_op_and_a_new_sample_rebuilds(source, tmp_path, preprocessings):
    run = tmp_path / "run"
    _ingest(source, run, pixel_cache=["lite0"])
    (meta_path,) = _folders(run)
    stamps = {p.name: p.stat().st_mtime_ns for p in meta_path.parent.iterdir()}
    _ingest(source, run, pixel_cache=["lite0"])
    assert {p.name: p.stat().st_mtime_ns for p in meta_path.parent.iterdir()} == stamps
    assert [m.parent.name for m in _folders(run)] == [meta_path.parent.name]

    _ingest(source, run, pixel_cache=["lite0"], per_category=2)  # another sample: the same folder, rebuilt
    cache = pc.open_pixel_cache(run, preprocessings["lite0"])
    tasks = image_tasks(run, all_rows=False)
    assert len(tasks) == 4 and cache.pixels.shape[0] == 4 and cache.folder == meta_path.parent
    preprocess = ImagePreprocessor(preprocessings["lite0"])
    assert all(np.array_equal(cache.get([t.image_id])[0], preprocess(t.decode_path)) for t in tasks)
    assert not (cache.folder / "pixels.partial.npy").exists() and not (cache.folder / "progress.json").exists()


@pytest.mark.timeout(120)
def test_a_killed_build_resumes_where_it_stopped(source, tmp_path, monkeypatch, preprocessings):
    run = tmp_path / "run"
    _ingest(source, run)
    monkeypatch.setattr(pc, "BUILD_BATCH", 2)
    monkeypatch.setattr(pc, "SAVE_EVERY_ROWS", 2)
    decoded = []
    original = pc.MultiPreprocessor.__call__

    def dies_after_eight(self, path):
        if len(decoded) == 8:
            raise KeyboardInterrupt  # the process is stopped mid-build
        decoded.append(path)
        return original(self, path)

    monkeypatch.setattr(pc.MultiPreprocessor, "__call__", dies_after_eight)
    with pytest.raises(KeyboardInterrupt):
        pc.build_pixel_caches(run, ["lite0"], workers=0, progress=False)
    assert _folders(run) == [] and read_json(next((run / "dataset" / "pixels").glob("*/progress.json")))["rows_done"] == 8
    monkeypatch.setattr(pc.MultiPreprocessor, "__call__", lambda self, path: decoded.append(path) or original(self, path))
    (summary,) = pc.build_pixel_caches(run, ["lite0"], workers=0, progress=False)
    tasks = image_tasks(run, all_rows=False)
    assert summary["built"] and len(decoded) == len(tasks)  # the rerun decoded only the rows not yet saved
    cache = pc.open_pixel_cache(run, preprocessings["lite0"])
    preprocess = ImagePreprocessor(preprocessings["lite0"])
    assert all(np.array_equal(cache.get([t.image_id])[0], preprocess(t.decode_path)) for t in tasks)


@pytest.mark.timeout(180)
def test_a_damaged_or_stale_cache_falls_back_to_decoding(source, tmp_path):
    run = tmp_path / "run"
    _ingest(source, run, pixel_cache=["lite0"])
    (reference,) = extract(run, "lite0", **FAST)
    ids, X = load_features(reference)
    (meta_path,) = _folders(run)
    pixels = meta_path.parent / "pixels.npy"
    intact = pixels.read_bytes()

    def extract_again():
        shutil.rmtree(run / "features")
        (folder,) = extract(run, "lite0", **FAST)
        got_ids, got_X = load_features(folder)
        assert list(got_ids) == list(ids) and np.array_equal(got_X, X)  # nothing lost, same vectors
        return read_json(folder / "meta.json")["images_from_pixel_cache"]

    pixels.write_bytes(intact[: len(intact) // 2])  # truncated
    assert extract_again() == 0
    pixels.write_bytes(intact)
    meta_path.write_text("{not json")
    assert extract_again() == 0
    meta_path.unlink()
    assert extract_again() == 0

    # a file that changed after the cache was built is decoded again; the other rows still come from the cache
    _ingest(source, run, pixel_cache=["lite0"])
    changed = source / "red" / "1.png"
    make_image(changed, seed=1234, size=(50, 64))
    _ingest(source, run)  # the sample records the new content; the cache was not rebuilt
    shutil.rmtree(run / "features")
    (folder,) = extract(run, "lite0", **FAST)
    assert read_json(folder / "meta.json")["images_from_pixel_cache"] == len(ids) - 1
    shutil.rmtree(run / "dataset" / "pixels")
    shutil.rmtree(run / "features")
    (decoded,) = extract(run, "lite0", **FAST)
    assert np.array_equal(load_features(folder)[1], load_features(decoded)[1])


@pytest.mark.timeout(120)
def test_failed_images_keep_their_status(source, tmp_path):
    run = tmp_path / "run"
    _ingest(source, run)
    broken = source / "green" / "2.jpg"
    broken.write_bytes(broken.read_bytes()[:60])  # broken after ingest sampled it
    (summary,) = pc.build_pixel_caches(run, ["lite0"], workers=1, progress=False)
    assert summary["failed"] == 1
    rows = pq.read_table(f"{summary['folder']}/rows.parquet").to_pylist()
    assert [row["status"] for row in rows].count("truncated") == 1 and rows == sorted(rows, key=lambda r: r["image_id"])
    (folder,) = extract(run, "lite0", **FAST)
    meta = read_json(folder / "meta.json")
    assert meta["images_from_pixel_cache"] == len(rows) - 1
    shutil.rmtree(run / "dataset" / "pixels")
    shutil.rmtree(run / "features")
    (decoded,) = extract(run, "lite0", **FAST)
    assert [(f["image_id"], f["status"]) for f in meta["failed"]] == [
        (f["image_id"], f["status"]) for f in read_json(decoded / "meta.json")["failed"]] and len(meta["failed"]) == 1
    assert np.array_equal(load_features(folder)[1], load_features(decoded)[1])


@pytest.mark.timeout(120)
def test_a_cache_over_the_size_limit_is_not_built(source, tmp_path, capsys):
    run = tmp_path / "run"
    _ingest(source, run, pixel_cache=["lite0"], pixel_cache_limit=10 * 3 * 224 * 224)  # room for 10 rows, not 14
    assert not (run / "dataset" / "pixels").exists() and "pixel cache: not built" in capsys.readouterr().out
    _ingest(source, run, pixel_cache=["lite0"], pixel_cache_limit=14 * 3 * 224 * 224)
    assert len(_folders(run)) == 1


@pytest.mark.timeout(120)
def test_a_cache_that_would_fill_the_disk_is_not_built_and_extract_decodes(source, tmp_path, capsys, monkeypatch):
    """In a run (``fallback``); outside one it is a DiskFullError (test_reliability_classes)."""
    run = tmp_path / "run"
    _ingest(source, run)
    need = len(image_tasks(run)) * 3 * 224 * 224
    monkeypatch.setattr(pc, "free_bytes", lambda path: need + pc.DISK_RESERVE_BYTES - 1)
    assert pc.build_pixel_caches(run, ["lite0"], workers=0, progress=False, fallback=True) == []
    assert "pixel cache: not built" in capsys.readouterr().out and _folders(run) == []
    (folder,) = extract(run, "lite0", pretrained=False, workers=0, progress=False)
    assert read_json(folder / "meta.json")["images_from_pixel_cache"] == 0  # decoded instead; the run goes on
    monkeypatch.setattr(pc, "free_bytes", lambda path: need + pc.DISK_RESERVE_BYTES)
    assert len(pc.build_pixel_caches(run, ["lite0"], workers=0, progress=False, fallback=True)) == 1


def test_config_and_cli_take_a_backbone_list(tmp_path):
    from pintopic.cli import build_parser
    from pintopic.config import load_config

    config = tmp_path / "study.toml"
    config.write_text('[dataset]\nsource = "data"\npixel_cache = "lite0, effnetv2_b0"\n')
    assert load_config(config)["dataset"]["pixel_cache"] == BOTH
    config.write_text('[dataset]\nsource = "data"\n')
    assert load_config(config)["dataset"]["pixel_cache"] == "auto"
    assert load_config(config, ["dataset.pixel_cache=[]"])["dataset"]["pixel_cache"] == []
    assert load_config(config, ["dataset.pixel_cache=lite0"])["dataset"]["pixel_cache"] == ["lite0"]
    args = build_parser().parse_args(["ingest", "src", "run", "--pixel-cache", "lite0,effnetv2_b0"])
    assert args.pixel_cache == BOTH
