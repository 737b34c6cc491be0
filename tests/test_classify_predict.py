"""predict(): top-k categories per image from a model folder; unreadable inputs get their own error entry."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_image
from test_classify_evaluate import FAST_GRIDS, class_features, make_run, make_sample

import pintopic.features.embed
from pintopic.classify import evaluate
from pintopic.predict import expand_inputs, format_predictions, predict


@pytest.fixture
def fitted_run(tmp_path):
    sample = make_sample()
    X = class_features(sample["category"], ["a", "b", "c", "d"])
    run = make_run(tmp_path, sample, X, tta=None)
    evaluate(run, progress=False, classifiers=["knn", "lsvm"], grids=FAST_GRIDS)
    return run, sample, X


def test_predict_uses_the_model_backbone_and_reports_bad_files(tmp_path, fitted_run, monkeypatch):
    run, sample, X = fitted_run
    images = [make_image(tmp_path / "in" / f"{i}.png", seed=i) for i in range(3)]
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    seen = {}

    def fake_embed(spec, paths, **settings):
        seen.update(spec=spec, paths=list(paths), **settings)
        rows = np.stack([X[0], X[-1], np.full(X.shape[1], np.nan)]).astype(np.float32)
        return rows, [(2, "truncated", "image file is truncated")]

    monkeypatch.setattr(pintopic.features.embed, "embed_images", fake_embed)
    predictions = predict(run / "results" / "models" / "synthetic-abc123__knn", [tmp_path / "in"], top_k=2)
    assert seen["spec"] == "synthetic" and seen["pretrained"] is False
    assert seen["paths"] == [str(p) for p in images]  # the folder expanded to its images only
    assert [p["top"][0]["category"] for p in predictions[:2]] == [sample["category"].iloc[0], sample["category"].iloc[-1]]
    assert len(predictions[0]["top"]) == 2 and predictions[0]["score_kind"] == "probability"
    assert predictions[2]["error"].startswith("truncated") and "top" not in predictions[2]
    table = format_predictions(predictions, "table")
    assert "error: truncated" in table and sample["category"].iloc[0] in table
    assert json.loads(format_predictions(predictions, "json"))[1]["path"] == str(images[1])
    assert format_predictions(predictions, "csv").splitlines()[0] == "path,rank,category,score,note"


def test_lsvm_model_gives_decision_scores(tmp_path, fitted_run, monkeypatch):
    run, sample, X = fitted_run
    monkeypatch.setattr(pintopic.features.embed, "embed_images", lambda spec, paths, **s: (X[:1].astype(np.float32), []))
    (prediction,) = predict(run / "results" / "models" / "synthetic-abc123__lsvm", [make_image(tmp_path / "x.png")])
    assert prediction["score_kind"] == "decision" and prediction["top"][0]["category"] == sample["category"].iloc[0]


def test_saved_ensemble_predicts_what_its_row_scored(tmp_path, monkeypatch):
    """models/ensemble averages its members' probabilities over two backbones (each embedding once) and
    reproduces the ensemble row's test predictions; a missing member is a clear error."""
    import pyarrow.parquet as pq
    from test_classify_evaluate import write_store

    from pintopic.errors import PintopicError

    sample = make_sample(n_per_category=30)
    # each backbone tells apart only two of the four categories: only the ensemble of both sees all four
    X_ab = class_features(sample["category"].replace({"d": "c"}), ["a", "b", "c"], separation=2.0, seed=1)
    X_cd = class_features(sample["category"].replace({"b": "a"}), ["a", "c", "d"], separation=2.0, seed=2)
    run = make_run(tmp_path, sample, X_ab, key="ab-111", spec="ab", tta=None)
    write_store(run, "cd-222", sample["image_id"], X_cd, spec="cd", tta=None)
    results = evaluate(run, progress=False, classifiers=["knn", "logreg", "ensemble"],
                       grids={"knn": {"k": [5]}, "logreg": {"C": [1.0]}})
    row = next(r for r in results["rows"] if r["classifier"] == "ensemble")
    assert {m.split("__")[0] for m in row["member_models"]} == {"ab-111", "cd-222"}
    assert row["test_f1_macro"] > max(r["test_f1_macro"] for r in results["rows"] if r["classifier"] != "ensemble")

    recorded = pq.read_table(run / "results" / "predictions" / "ensemble.parquet").to_pandas()
    position = {image_id: n for n, image_id in enumerate(sample["image_id"])}
    rows = [position[i] for i in recorded["image_id"]]
    features = {"ab": X_ab[rows].astype(np.float32), "cd": X_cd[rows].astype(np.float32)}
    calls = []

    def fake_embed(spec, paths, **settings):
        calls.append(spec)
        return features[spec], []

    monkeypatch.setattr(pintopic.features.embed, "embed_images", fake_embed)
    paths = [f"{i}.jpg" for i in recorded["image_id"]]
    predictions = predict(run / "results" / "models" / "ensemble", paths, top_k=2)
    assert sorted(calls) == ["ab", "cd"]
    assert [p["top"][0]["category"] for p in predictions] == list(recorded["pred"])
    assert np.allclose([p["top"][0]["score"] for p in predictions], recorded["score1"])
    assert {p["score_kind"] for p in predictions} == {"probability"}

    import shutil

    shutil.rmtree(run / "results" / "models" / row["member_models"][0])
    with pytest.raises(PintopicError, match="ensemble member .* is missing"):
        predict(run / "results" / "models" / "ensemble", paths[:1])


def test_expand_inputs_keeps_files_and_sorts_folder_images(tmp_path):
    make_image(tmp_path / "d" / "b.jpg", fmt="JPEG")
    make_image(tmp_path / "d" / "sub" / "a.png")
    (tmp_path / "d" / "readme.md").write_text("x")
    assert expand_inputs([tmp_path / "d", "missing.jpg"]) == [
        str(tmp_path / "d" / "b.jpg"), str(tmp_path / "d" / "sub" / "a.png"), "missing.jpg"]


@pytest.mark.integration
@pytest.mark.timeout(1500)
def test_lite0_natural_images_end_to_end(tmp_path, natural_images):
    from pintopic.dataset import ingest, load_sample
    from pintopic.features import extract

    run = tmp_path / "run"
    ingest(natural_images, run, per_category=50, seed=0, progress=False)
    extract(run, ["lite0"], progress=False)
    results = evaluate(run, progress=False)
    for row in results["rows"]:
        assert row["test_f1_macro"] >= 0.95, (row["classifier"], row["test_f1_macro"])
    sampled = set(load_sample(run)["path"])
    photos = []
    for category in sorted(p.name for p in natural_images.iterdir() if p.is_dir()):
        candidates = sorted(p for p in (natural_images / category).iterdir() if f"{category}/{p.name}" not in sampled)
        photos += candidates[:2]
    photos = photos[:10]
    key = results["rows"][0]["key"]
    predictions = predict(run / "results" / "models" / f"{key}__lsvm", photos)
    right = sum(p["top"][0]["category"] == path.parent.name for p, path in zip(predictions, photos))
    assert right >= 9, format_predictions(predictions)
