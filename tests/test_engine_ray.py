"""The Ray engine on a local two-node cluster (127.0.0.1 only): ingest, extract and crawl-wide predict give the
local engine's manifest, ids and features (<= 1e-5) and predictions, and resume after a killed worker or driver."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import REPO

from pintopic.dataset import ingest
from pintopic.engine import EngineSettings
from pintopic.errors import RunLockedError
from pintopic.features import extract, load_features
from pintopic.runio import read_json

PER_CATEGORY = 20  # x 8 natural-images classes = 160 photos, plus 3 bad files
EXTRACT = {"pretrained": True, "progress": False, "batch_size": 8, "shard_rows": 16}  # lite0, real weights: 10 shards
DATASET_FILES = ("manifest.parquet", "sample.parquet", "dataset.json", "distribution.csv")


@pytest.fixture(scope="module")
def photos(natural_images, tmp_path_factory) -> Path:
    """Real photos copied into a folders source, with an empty file, a truncated JPEG and a duplicate."""
    root = tmp_path_factory.mktemp("photos") / "source"
    for folder in sorted(natural_images.iterdir()):
        (root / folder.name).mkdir(parents=True)
        for path in sorted(folder.iterdir())[:PER_CATEGORY]:
            shutil.copyfile(path, root / folder.name / path.name)
    (root / "cat" / "empty.jpg").write_bytes(b"")
    first = min((root / "dog").iterdir())
    (root / "dog" / "truncated.jpg").write_bytes(first.read_bytes()[: first.stat().st_size // 3])
    shutil.copyfile(first, root / "dog" / "copy.jpg")
    return root


def _run(photos: Path, run: Path, engine: EngineSettings | None = None) -> Path:
    ingest(photos, run, progress=False, engine=engine)
    (store,) = extract(run, "lite0", engine=engine, **EXTRACT)
    return store


@pytest.fixture(scope="module")
def local_store(photos, tmp_path_factory) -> Path:
    return _run(photos, tmp_path_factory.mktemp("local") / "run")


@pytest.fixture(scope="module")
def ray_engine(ray_cluster) -> EngineSettings:
    return EngineSettings(kind="ray", address=ray_cluster)


@pytest.fixture(scope="module")
def ray_store(photos, ray_engine, tmp_path_factory) -> Path:
    return _run(photos, tmp_path_factory.mktemp("ray") / "run", ray_engine)


def _run_of(store: Path) -> Path:
    return store.parent.parent


def _fresh_run(store: Path, tmp_path: Path) -> Path:
    """A run folder holding a copy of ``store``'s dataset and no features."""
    run = tmp_path / "run"
    shutil.copytree(_run_of(store) / "dataset", run / "dataset")
    return run


def assert_same_store(store: Path, reference: Path) -> None:
    ids, X = load_features(store)
    reference_ids, reference_X = load_features(reference)
    assert list(ids) == list(reference_ids)
    assert X.shape == reference_X.shape and np.abs(X - reference_X).max() <= 1e-5
    for name in sorted(path.name for path in reference.glob("ids-*.parquet")) + ["meta.json"]:
        assert (store / name).exists(), name
    assert sorted(p.name for p in store.glob("*-*.*")) == sorted(p.name for p in reference.glob("*-*.*"))
    assert read_json(store / "meta.json")["failed"] == read_json(reference / "meta.json")["failed"]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_ray_ingest_and_extract_equal_the_local_engine(local_store, ray_store):
    local_run, ray_run = _run_of(local_store), _run_of(ray_store)
    for name in DATASET_FILES:  # same statuses, reasons and sample, byte for byte
        assert (ray_run / "dataset" / name).read_bytes() == (local_run / "dataset" / name).read_bytes(), name
    statuses = pq.read_table(ray_run / "dataset" / "manifest.parquet", columns=["status"]).column("status").to_pylist()
    assert sorted(set(statuses)) == ["duplicate", "empty", "ok", "truncated"]
    assert ray_store.name == local_store.name
    assert_same_store(ray_store, local_store)
    meta = read_json(ray_store / "meta.json")
    assert meta["engine"]["kind"] == "ray" and meta["engine"]["nodes"] == 2 and meta["n_shards"] == 10
    assert read_json(local_store / "meta.json")["engine"]["kind"] == "local"


@pytest.fixture(scope="module")
def ray_model(ray_store) -> Path:
    """A k-NN model fitted on the store Ray wrote (read by evaluate like any other)."""
    from pintopic.classify import evaluate

    run = _run_of(ray_store)
    evaluate(run, classifiers=["knn"], cv=2, grids={"knn": {"k": [5]}}, progress=False)
    (model,) = (run / "results" / "models").iterdir()
    return model


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_crawl_wide_predict_on_ray_equals_local_and_pintopic_predict(photos, ray_model, ray_engine, tmp_path, capsys):
    from pintopic.predict import predict
    from pintopic.predict.crawl import predict_crawl

    model = ray_model
    settings = {"top_k": 3, "batch_size": 8, "shard_rows": 64, "progress": False}
    local = predict_crawl(model, photos, tmp_path / "local.parquet", **settings)
    on_ray = predict_crawl(model, photos, tmp_path / "ray.parquet", engine=ray_engine, **settings)
    assert local["by_status"] == on_ray["by_status"] == {"empty": 1, "ok": 161, "truncated": 1}
    assert on_ray["engine"]["nodes"] == 2 and not (tmp_path / "ray.parquet.parts").exists()
    a, b = (pq.read_table(tmp_path / name).to_pandas() for name in ("local.parquet", "ray.parquet"))
    assert list(a.columns) == ["image_id", "path", "user", "board", "pin", "status", "reason", "category", "score",
                               "top_categories", "top_scores"]
    assert a.drop(columns=["score", "top_scores"]).astype(str).equals(b.drop(columns=["score", "top_scores"]).astype(str))
    assert np.nanmax(np.abs(a["score"].astype(float) - b["score"].astype(float))) <= 1e-5
    assert list(a["image_id"]) == sorted(a["image_id"]) and a["top_categories"].dropna().map(len).eq(3).all()
    failed = b[b["status"] != "ok"]
    assert set(failed["path"]) == {"cat/empty.jpg", "dog/truncated.jpg"} and failed["category"].isna().all()
    assert failed["reason"].str.len().gt(0).all()

    ok = b[b["status"] == "ok"].iloc[::20]
    single = predict(model, [str(photos / path) for path in ok["path"]], top_k=3)
    for (_, row), expected in zip(ok.iterrows(), single):
        assert list(row["top_categories"]) == [entry["category"] for entry in expected["top"]]
        assert np.allclose(row["top_scores"], [entry["score"] for entry in expected["top"]], atol=1e-5)
    capsys.readouterr()
    again = predict_crawl(model, photos, tmp_path / "ray.parquet", engine=ray_engine, **settings)
    assert again == on_ray and "up to date" in capsys.readouterr().out


def _actor_processes() -> list[int]:
    """Pids of the Ray actor processes that run the embedding step (Ray titles them after the class)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if command.startswith(b"ray::") and b"_Actor" in command:
                found.append(int(entry.name))
    return found


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_killed_worker_is_retried_and_the_store_equals_a_clean_run(ray_store, ray_engine, tmp_path):
    run = _fresh_run(ray_store, tmp_path)
    killed: list[int] = []

    def kill_an_actor_mid_run():
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and not list(run.glob("features/*/ids-00001.parquet")):
            time.sleep(0.02)
        if list(run.glob("features/*/meta.json")):
            return
        for pid in _actor_processes()[:1]:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    watcher = threading.Thread(target=kill_an_actor_mid_run)
    watcher.start()
    (store,) = extract(run, "lite0", engine=ray_engine, **EXTRACT)
    watcher.join()
    assert killed, "no embedding actor was running when the first shards were done; the test proves nothing"
    assert_same_store(store, ray_store)


def _dies_on_row_13(batch: dict) -> dict:
    """A step whose worker process dies (like a decoder fault) whenever its batch holds the value 13."""
    if (batch["value"] == 13).any():
        os._exit(3)
    return {"value": batch["value"] * 2}


def _crashed(batch: dict) -> dict:
    return {"value": np.full(len(batch["value"]), -1)}


@pytest.mark.timeout(600)
def test_a_row_that_kills_every_worker_costs_only_itself(ray_engine):
    from ray import cloudpickle

    from pintopic.engine import Step, open_engine

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this test module
    batches = [{"value": np.arange(start, start + 10)} for start in range(0, 40, 10)]
    step = Step(_dies_on_row_13, on_crash=_crashed, task_rows=20)
    outputs = dict(open_engine(ray_engine).run(batches, step))
    assert sorted(outputs) == [0, 1, 2, 3]
    for index, batch in enumerate(batches):
        expected = [-1 if value == 13 else 2 * value for value in batch["value"]]
        assert list(outputs[index]["value"]) == expected


def _has_ray_imported(batch: dict) -> dict:
    return {"ray": np.full(len(batch["value"]), "ray" in sys.modules)}


def test_the_local_engine_never_forks_a_ray_driver(ray_engine):
    """Ray's threads do not survive a fork: a driver's next Ray call hung after the local engine forked it."""
    from ray import cloudpickle

    from pintopic.engine import EngineSettings, Step, open_engine

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this test module
    open_engine(ray_engine)  # this process is now a Ray driver
    batches = [{"value": np.arange(start, start + 4)} for start in range(0, 8, 4)]
    outputs = dict(open_engine(EngineSettings(kind="local")).run(batches, Step(_has_ray_imported), workers=2))
    assert sorted(outputs) == [0, 1]
    assert not any(outputs[0]["ray"]) and not any(outputs[1]["ray"])  # fresh interpreters, not forks of this one
    assert list(open_engine(ray_engine).run(batches, Step(_has_ray_imported)))  # Ray still answers


KILLABLE = """
import sys
from pintopic.engine import EngineSettings
from pintopic.features import extract
extract(sys.argv[1], "lite0", engine=EngineSettings(kind="ray", address=sys.argv[2]), **{settings!r})
"""


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_killed_driver_resumes_without_redoing_finished_shards(ray_store, ray_engine, tmp_path):
    run = _fresh_run(ray_store, tmp_path)
    code = KILLABLE.format(settings=EXTRACT)
    driver = subprocess.Popen([sys.executable, "-c", code, str(run), ray_engine.address], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(run.glob("features/*/ids-00001.parquet")):
        if driver.poll() is not None:
            pytest.fail(f"the driver ended (rc {driver.returncode}) before it could be killed")
        time.sleep(0.01)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    (folder,) = (run / "features").iterdir()
    assert not (folder / "meta.json").exists(), "the run finished before the kill; the test proves nothing"
    finished = {path.name: path.stat().st_mtime_ns for path in folder.glob("ids-*.parquet")}
    finished.update({f"part-{name[4:9]}.npy": (folder / f"part-{name[4:9]}.npy").stat().st_mtime_ns for name in list(finished)})
    assert 4 <= len(finished) < 20

    (store,) = extract(run, "lite0", engine=ray_engine, **EXTRACT)  # the lock died with the driver
    assert {name: (store / name).stat().st_mtime_ns for name in finished} == finished  # not recomputed
    assert_same_store(store, ray_store)


HOLD_LOCK = """
import sys, time
from pintopic.runio import RunLock
with RunLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.mark.timeout(120)
def test_a_second_driver_on_the_same_run_is_refused(ray_store, ray_model, ray_engine, tmp_path):
    from pintopic.predict.crawl import predict_crawl

    run, parts = _fresh_run(ray_store, tmp_path), tmp_path / "out.parquet.parts"
    for folder, second_driver in (
            (run, lambda: extract(run, "lite0", engine=ray_engine, **EXTRACT)),
            (parts, lambda: predict_crawl(ray_model, tmp_path, tmp_path / "out.parquet", engine=ray_engine, progress=False))):
        folder.mkdir(exist_ok=True)
        first = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        try:
            assert first.stdout.readline().strip() == "held"
            with pytest.raises(RunLockedError, match=f"in use by pid {first.pid}"):
                second_driver()
        finally:
            first.kill()
            first.wait()
    assert not (run / "features").exists() and not (tmp_path / "out.parquet").exists()


def test_without_ray_the_ray_engine_is_a_one_line_error(tiny_folders, tmp_path, monkeypatch, capsys):
    from pintopic.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    monkeypatch.setitem(sys.modules, "ray.data", None)
    assert main(["ingest", str(tiny_folders), str(tmp_path / "run"), "--engine", "ray", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("pintopic: error: --engine ray needs Ray Data") and "pip install 'pintopic[ray]'" in error
    assert error.count("\n") == 1


@pytest.mark.parametrize("address, message", [
    ("nohost", "bad Ray address 'nohost'"),
    ("ray://10.0.0.1:99999", "bad Ray address"),
    ("127.0.0.1:9", "cannot reach a Ray cluster at '127.0.0.1:9'"),
])
def test_a_bad_ray_address_is_a_one_line_error(address, message, tiny_folders, tmp_path, capsys):
    from pintopic.cli import main

    started = time.monotonic()
    assert main(["ingest", str(tiny_folders), str(tmp_path / "run"), "--engine", "ray", "--ray-address", address]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"pintopic: error: {message}") and error.count("\n") == 1
    assert time.monotonic() - started < 30


def test_pintopic_run_takes_the_engine_from_its_config(tiny_study, capsys):
    from pintopic.cli import main

    assert main(["run", str(tiny_study), "--quiet", "--set", "engine.kind=ray", "--set", "engine.address=127.0.0.1:9"]) == 2
    assert "cannot reach a Ray cluster at '127.0.0.1:9'" in capsys.readouterr().err
    assert main(["run", str(tiny_study), "--quiet", "--set", "engine.kind=spark"]) == 2
    assert "config key engine.kind must be one of 'local', 'ray', not 'spark'" in capsys.readouterr().err
