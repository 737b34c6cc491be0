"""The classify stage end to end on generated run folders (sample.parquet + feature stores written here)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pintopic.classify import BelowChanceWarning, evaluate
from pintopic.dataset.split import make_split
from pintopic.features.store import ids_checksum
from pintopic.runio import write_json, write_npy, write_parquet

FAST_GRIDS = {"knn": {"k": [1, 5]}, "lsvm": {"C": [0.1, 1]}, "nn": {"batch_size": [32]}}


def make_sample(n_per_category: int = 40, categories=("a", "b", "c", "d"), users: int = 0, seed: int = 0) -> pd.DataFrame:
    """A sample table in the dataset stage's schema; ``users`` > 0 assigns each image to a user."""
    rng = np.random.default_rng(seed)
    rows = []
    for category in categories:
        for i in range(n_per_category):
            path = f"{category}/img_{i:03d}.jpg"
            user = f"user{rng.integers(users)}" if users else None
            rows.append({
                "image_id": __import__("hashlib").sha1(path.encode()).hexdigest(), "path": path,
                "abspath": f"/nowhere/{path}".encode(), "user": user, "board": f"{user}/{category}" if users else None,
                "pin": None, "category": category, "status": "ok", "reason_detail": "", "sha256": None,
                "width": 32, "height": 32,
            })
    return pd.DataFrame(rows).sort_values("image_id").reset_index(drop=True)


def write_store(run: Path, key: str, ids, X: np.ndarray, spec: str = "synthetic", **meta) -> Path:
    """A complete feature store in the store format: part/ids shard, then meta.json."""
    folder = run / "features" / key
    write_npy(folder / "part-00000.npy", X.astype(np.float32))
    write_parquet(folder / "ids-00000.parquet", pd.DataFrame({"image_id": list(ids)}))
    write_json(folder / "meta.json", {"spec": spec, "key": key, "dim": X.shape[1], "dtype": "float32",
                                      "n_rows": len(ids), "ids_sha256": ids_checksum(list(ids)), "shard_rows": len(ids),
                                      "failed": [], "pretrained": False, **meta})
    return folder


def class_features(labels, categories, dim: int = 16, separation: float = 6.0, seed: int = 0) -> np.ndarray:
    """Gaussian blobs around one random centre per category (``separation`` scales the centres)."""
    rng = np.random.default_rng(seed)
    centres = {c: rng.normal(size=dim) * separation for c in categories}
    return np.stack([centres[label] + rng.normal(size=dim) for label in labels])


def make_run(tmp_path: Path, sample: pd.DataFrame, X: np.ndarray | None = None, key: str = "synthetic-abc123", **meta) -> Path:
    run = tmp_path / "run"
    write_parquet(run / "dataset" / "sample.parquet", sample)
    categories = sorted(sample["category"].unique())
    if X is None:
        X = class_features(sample["category"], categories)
    write_store(run, key, sample["image_id"], X, **meta)
    return run


def strip_timings(results: dict) -> dict:
    results = json.loads(json.dumps(results))
    for row in results["rows"]:
        row.pop("fit_seconds")
    return results


@pytest.mark.timeout(300)
def test_separable_features_score_high_and_outputs_are_complete(tmp_path):
    run = make_run(tmp_path, make_sample())
    results = evaluate(run, progress=False)
    assert {row["classifier"] for row in results["rows"]} == {"knn", "lsvm", "nn"}
    for row in results["rows"]:
        assert row["test_f1_macro"] >= 0.95, row
        assert row["n_train"] == 128 and row["n_test"] == 32
        assert [r["params"] for r in row["cv_results"]]  # kept for every grid value
        assert set(row["per_category"]) == {"a", "b", "c", "d"}
        pair = f"{row['key']}__{row['classifier']}"
        confusion = pd.read_csv(run / "results" / "confusion" / f"{pair}.csv", index_col=0)
        assert list(confusion.columns) == ["a", "b", "c", "d"] and confusion.to_numpy().sum() == 32
        predictions = pd.read_parquet(run / "results" / "predictions" / f"{pair}.parquet")
        assert len(predictions) == 32 and predictions["correct"].mean() >= 0.95
        assert (run / "results" / "models" / pair / "model.json").exists()
    table = (run / "results" / "table.md").read_text()
    assert "synthetic" in table and "average" in table
    split = pd.read_parquet(run / "results" / "split.parquet")
    assert split["part"].value_counts().to_dict() == {"train": 128, "test": 32}
    assert results["chance_f1"] == 0.25


@pytest.mark.timeout(300)
def test_shuffled_labels_score_near_chance(tmp_path):
    sample = make_sample(n_per_category=40, categories=tuple("abcdefgh"))
    rng = np.random.default_rng(1)
    X = rng.normal(size=(len(sample), 16))  # features carry no information about the labels
    run = make_run(tmp_path, sample, X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BelowChanceWarning)
        results = evaluate(run, progress=False, grids=FAST_GRIDS)
    for row in results["rows"]:
        assert row["test_f1_macro"] <= 2 / 8, row


@pytest.mark.timeout(300)
def test_below_chance_warning_fires_when_test_features_point_elsewhere(tmp_path, capsys):
    sample = make_sample()
    split = make_split(sample, test_size=0.2, seed=0).set_index("image_id")["part"]
    categories = sorted(sample["category"].unique())
    # test images carry the features of the *next* category: every test prediction is wrong
    shown_as = [c if split[i] == "train" else categories[(categories.index(c) + 1) % 4]
                for i, c in zip(sample["image_id"], sample["category"])]
    run = make_run(tmp_path, sample, class_features(shown_as, categories))
    with pytest.warns(BelowChanceWarning):
        results = evaluate(run, progress=False, classifiers=["knn"], grids=FAST_GRIDS)
    assert results["rows"][0]["test_f1_macro"] < 0.25
    assert "BELOW CHANCE" in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_same_seed_same_results_and_rerun_is_a_noop(tmp_path):
    sample = make_sample()
    X = class_features(sample["category"], sorted(sample["category"].unique()))
    first = make_run(tmp_path / "one", sample, X)
    shuffled = np.random.default_rng(3).permutation(len(sample))  # file and store order must not matter
    second = make_run(tmp_path / "two", sample.iloc[shuffled], X[shuffled])
    results_one = evaluate(first, progress=False, grids=FAST_GRIDS)
    results_two = evaluate(second, progress=False, grids=FAST_GRIDS)
    assert strip_timings(results_one) == strip_timings(results_two)
    results_file = first / "results" / "results.json"
    before = results_file.stat().st_mtime_ns
    model_file = first / "results" / "models" / "synthetic-abc123__knn" / "model.npz"
    model_before = model_file.stat().st_mtime_ns
    again = evaluate(first, progress=False, grids=FAST_GRIDS)
    assert again == results_one  # timings included: nothing was refitted
    assert results_file.stat().st_mtime_ns == before and model_file.stat().st_mtime_ns == model_before
    # a changed grid recomputes only the affected classifier
    lsvm_model = first / "results" / "models" / "synthetic-abc123__lsvm" / "model.npz"
    lsvm_before = lsvm_model.stat().st_mtime_ns
    changed = evaluate(first, progress=False, grids={**FAST_GRIDS, "knn": {"k": [1, 3]}})
    assert model_file.stat().st_mtime_ns != model_before and lsvm_model.stat().st_mtime_ns == lsvm_before
    assert [r["params"]["k"] for r in changed["rows"][0]["cv_results"]] == [1, 3]


@pytest.mark.timeout(120)
def test_group_split_keeps_each_user_on_one_side(tmp_path):
    sample = make_sample(n_per_category=30, users=15)
    run = make_run(tmp_path, sample)
    evaluate(run, progress=False, classifiers=["knn"], split="group:user", grids=FAST_GRIDS)
    split = pd.read_parquet(run / "results" / "split.parquet").merge(sample[["image_id", "user"]], on="image_id")
    sides = split.groupby("user")["part"].nunique()
    assert (sides == 1).all() and set(split["part"]) == {"train", "test"}


def test_group_split_without_users_is_a_clear_error(tmp_path):
    from pintopic.errors import PintopicError

    run = make_run(tmp_path, make_sample())
    with pytest.raises(PintopicError, match="group:user needs a user"):
        evaluate(run, progress=False, classifiers=["knn"], split="group:user", grids=FAST_GRIDS)


def test_misaligned_store_is_refused(tmp_path):
    from pintopic.errors import AlignmentError

    sample = make_sample()
    run = make_run(tmp_path, sample)
    meta_path = run / "features" / "synthetic-abc123" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["ids_sha256"] = ids_checksum(list(sample["image_id"])[::-1])  # rows listed in another order
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(AlignmentError):
        evaluate(run, progress=False, classifiers=["knn"], grids=FAST_GRIDS)


@pytest.mark.timeout(120)
def test_failed_ids_are_dropped_for_that_backbone_only(tmp_path):
    sample = make_sample()
    run = make_run(tmp_path, sample)
    categories = sorted(sample["category"].unique())
    keep = sample.iloc[3:]
    write_store(run, "partial-def456", keep["image_id"], class_features(keep["category"], categories), spec="partial")
    with pytest.warns(UserWarning, match="3 sampled images have no features"):
        results = evaluate(run, progress=False, classifiers=["knn"], grids=FAST_GRIDS)
    by_backbone = {row["backbone"]: row for row in results["rows"]}
    assert by_backbone["partial"]["n_dropped"] == 3 and by_backbone["synthetic"]["n_dropped"] == 0
    assert by_backbone["partial"]["n_train"] + by_backbone["partial"]["n_test"] == len(sample) - 3


def test_ensemble_selects_members_on_the_same_grouped_folds(tmp_path, monkeypatch):
    """Regression: with a group split each pair's CV kept users apart, but the ensemble chose its members on
    ungrouped folds, i.e. on validation rows whose users it had trained on."""
    import pintopic.dataset.split as split_module

    sample = make_sample(n_per_category=30, users=12)
    run = make_run(tmp_path, sample)
    user_of = dict(zip(sample["image_id"], sample["user"]))
    seen = []
    real_cv_folds = split_module.cv_folds

    def recording_cv_folds(y, groups=None, **settings):
        folds = real_cv_folds(y, groups, **settings)
        seen.append(groups)
        return folds

    monkeypatch.setattr(split_module, "cv_folds", recording_cv_folds)
    results = evaluate(run, classifiers=["knn", "logreg", "ensemble"], cv=3, split="group:user",
                       grids={"knn": {"k": [1, 5]}, "logreg": {"C": [0.1]}}, progress=False)
    assert any(row["classifier"] == "ensemble" for row in results["rows"])
    assert seen and all(groups is not None for groups in seen)  # pairs and the ensemble: grouped folds
    for groups in seen:
        assert set(groups) <= set(user_of.values())
