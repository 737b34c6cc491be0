"""Fine-tuning: trunk/tail split, feature-level augmentation, resume after a kill, and the result as a backbone."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pintopic.errors import PintopicError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
@pytest.mark.parametrize("model_name,stages", [("tf_efficientnet_lite0", 1), ("tf_efficientnet_lite0", 2), ("convnext_atto", 1)])
def test_trunk_then_tail_equals_the_whole_model(model_name, stages):
    import timm
    import torch

    from pintopic.train.finetuning import split_model

    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, num_classes=0).eval()
    trunk, tail = split_model(model, stages)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = model(x)
        got = tail.eval()(trunk(x))
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    trunk_parameters = {id(p) for p in trunk.parameters()}
    assert not trunk_parameters & {id(p) for p in tail.parameters()}


def test_split_model_rejects_bad_stage_counts():
    import timm

    from pintopic.train.finetuning import split_model

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    for stages in (0, len(model.blocks)):
        with pytest.raises(PintopicError, match="--stages"):
            split_model(model, stages)


def test_feature_level_augmentation_keeps_shape_and_is_seeded():
    import torch

    from pintopic.train.finetuning import augment_maps

    maps = torch.arange(2 * 3 * 7 * 7, dtype=torch.float32).reshape(2, 3, 7, 7)
    first = augment_maps(maps, torch.Generator().manual_seed(1))
    again = augment_maps(maps, torch.Generator().manual_seed(1))
    other = [augment_maps(maps, torch.Generator().manual_seed(seed)) for seed in range(2, 8)]
    assert first.shape == maps.shape
    torch.testing.assert_close(first, again)
    assert any(not torch.equal(first, o) for o in other)


def test_unknown_finetuned_backbone_is_one_clear_error(tmp_path):
    from pintopic.features.registry import resolve_backbone

    with pytest.raises(PintopicError, match="not a finished fine-tune"):
        resolve_backbone(f"finetuned:{tmp_path}")


def _checkpoint_epoch(folder: Path) -> int:
    import json

    try:
        return json.loads((folder / "checkpoint.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return -1


@pytest.mark.timeout(600)
def test_finetune_resumes_after_kill_and_is_a_backbone_like_any_other(tiny_folders, tmp_path):
    """Kill ``pintopic finetune`` after its first epoch, rerun, then extract / evaluate / embed with the result."""
    import pandas as pd

    from pintopic.classify import evaluate
    from pintopic.dataset import image_file, ingest, load_sample
    from pintopic.features import embed_images, extract, load_features
    from pintopic.features.finetuned import finetuned_info
    from pintopic.features.registry import resolve_backbone
    from pintopic.train.finetuning import finetune

    run = tmp_path / "run"
    ingest(tiny_folders, run, min_per_category=1, progress=False)
    settings = dict(epochs=4, patience=4, batch_size=16, views=2, seed=0)
    command = [sys.executable, "-m", "pintopic", "finetune", str(run), "--out", "ft", "--runtime", "torch",
               "--workers", "0", "--quiet", *[f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    folder = run / "finetune" / "ft"
    deadline = time.monotonic() + 400
    while _checkpoint_epoch(folder) < 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    output = process.communicate()[0].decode(errors="replace")
    killed_at = _checkpoint_epoch(folder)
    assert 0 <= killed_at < settings["epochs"] - 1, f"the first run was not killed mid-training:\n{output}"
    assert not (folder / "finetune.json").exists()
    cache_files = {path: path.stat().st_mtime_ns for path in (folder / "cache").glob("view-*.npy")}
    assert len(cache_files) == 2  # one chunk per view

    finetune(run, name="ft", runtime="torch", workers=0, progress=False, **settings)
    info = finetuned_info(f"finetuned:{folder}")
    assert info["resumed_from_epoch"] == killed_at + 1
    assert [h["epoch"] for h in info["history"]] == list(range(1, settings["epochs"] + 1))
    assert {path: path.stat().st_mtime_ns for path in cache_files} == cache_files  # the trunk was not recomputed
    finished = (folder / "finetune.json").stat().st_mtime_ns
    finetune(run, name="ft", runtime="torch", workers=0, progress=False, **settings)
    assert (folder / "finetune.json").stat().st_mtime_ns == finished  # rerun is a no-op

    split = pd.read_parquet(run / "results" / "split.parquet")
    train = set(split.loc[split["part"] == "train", "image_id"])
    validation = set(pd.read_parquet(folder / "validation.parquet")["image_id"])
    assert validation < train and info["n_train"] + info["n_validation"] == len(train)  # never a test image
    assert info["base"] == "lite0" and info["preprocessing"]["input_size"] == [3, 224, 224]

    spec = resolve_backbone(f"finetuned:{folder}")
    assert spec.library == "finetuned" and spec.dim == 1280
    (store,) = extract(run, ["finetuned:ft"], runtime="torch", workers=0, progress=False)
    ids, X = load_features(store)
    assert X.shape == (36, 1280) and np.isfinite(X).all()

    results = evaluate(run, backbones=["finetuned:ft"], classifiers=["knn"], cv=3, progress=False)
    (row,) = results["rows"]
    assert row["backbone"] == f"finetuned:{folder}" and row["test_f1_macro"] > 1 / 3

    sample = load_sample(run).set_index("image_id")
    paths = [image_file(sample.loc[i]) for i in ids[:4]]
    vectors, errors = embed_images(f"finetuned:{folder}", paths, runtime="torch")
    assert not errors
    np.testing.assert_allclose(vectors, X[:4], rtol=1e-4, atol=1e-4)

    from pintopic.predict import predict

    predictions = predict(run / "results" / "models" / f"{store.name}__knn", paths[:2], top_k=2)
    assert len(predictions) == 2 and not any(p.get("error") for p in predictions)


@pytest.mark.timeout(480)
def test_a_config_finetunes_then_extracts_and_evaluates_the_result(tiny_folders, tmp_path):
    from pintopic.run import run_study

    config = tmp_path / "study.toml"
    config.write_text(f"""
[run]
folder = "run"
[dataset]
source = "{tiny_folders}"
min_per_category = 1
[finetune]
enabled = true
epochs = 1
views = 1
batch_size = 16
out = "ft"
[features]
backbones = ["finetuned:ft"]
runtime = "torch"
workers = 1
[classify]
classifiers = ["knn"]
cv = 3
[report]
enabled = false
""")
    summary = run_study(config, progress=False)
    (row,) = summary["results_json"]["rows"]
    assert row["backbone"] == f"finetuned:{(tmp_path / 'run' / 'finetune' / 'ft').resolve()}"
    assert "finetune" in summary["timings"]


def test_finetune_trains_on_the_runs_own_split_never_a_new_one(tiny_folders, tmp_path):
    """Regression: after `evaluate --split group:user`, finetune rewrote split.parquet as a stratified split and
    could train on images the group split held out for testing."""
    from pintopic.dataset import ingest, load_sample, make_crawl
    from pintopic.dataset.split import load_or_make_split, training_split
    from pintopic.train.finetuning import finetune

    crawl, run = tmp_path / "crawl", tmp_path / "run"
    make_crawl(tiny_folders, crawl, users=6, seed=0)
    ingest(crawl, run, min_per_category=1, progress=False)
    sample = load_sample(run)
    grouped, _ = load_or_make_split(run / "results", sample, test_size=0.2, split="group:user", seed=0)
    recorded = (run / "results" / "split.parquet").read_bytes()

    with pytest.raises(PintopicError, match="this run's split is group:user"):
        finetune(run, split="stratified", epochs=1, progress=False)
    frame, settings = training_split(run / "results", sample, seed=3)  # what finetune uses by default
    assert settings["split"] == "group:user" and frame.equals(grouped)
    assert (run / "results" / "split.parquet").read_bytes() == recorded
    test_users = set(sample.set_index("image_id").loc[frame.loc[frame["part"] == "test", "image_id"], "user"])
    train_users = set(sample.set_index("image_id").loc[frame.loc[frame["part"] == "train", "image_id"], "user"])
    assert test_users and not test_users & train_users


def test_a_cache_chunk_that_is_a_pipe_or_damaged_is_one_error_never_a_hang(tmp_path):
    from pintopic.train.finetuning import load_cache_chunk

    good = tmp_path / "view-0-00000.npy"
    np.save(good, np.ones((2, 3), np.float16))
    assert load_cache_chunk(good).shape == (2, 3)
    pipe = tmp_path / "view-0-00001.npy"
    os.mkfifo(pipe)
    with pytest.raises(PintopicError, match="not a regular file"):
        load_cache_chunk(pipe)
    damaged = tmp_path / "view-0-00002.npy"
    damaged.write_bytes(good.read_bytes()[:40])
    with pytest.raises(PintopicError, match="damaged fine-tuning cache file"):
        load_cache_chunk(damaged)
