"""Issue 7 (beyond the study): logreg/rbf, fusion, multi-stage features, TTA in the key, zero-shot, ensembles."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from pintopic.errors import PintopicError
from tests.test_features_extract import FAST, tiny_run

TINY = "timm:test_efficientnet"


def blobs(n_per_class=40, n_classes=3, dim=16, seed=0, spread=1.0):
    """Separable synthetic features: class centres on the first axes plus noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat([f"c{k}" for k in range(n_classes)], n_per_class)
    centres = 3.0 * np.eye(n_classes, dim)
    X = centres[np.repeat(np.arange(n_classes), n_per_class)] + spread * rng.normal(size=(len(y), dim))
    return X.astype(np.float32), y


# -- logreg and rbf ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name,grid", [("logreg", {"C": [0.01, 1.0]}), ("rbf", {"C": [1, 10], "gamma": [0.5, 1]}),
                                       ("wknn", {"k": [5, 10], "temperature": [0.05, 0.5], "whiten": [0, 0.01]}),
                                       ("lda", {"shrinkage": [0.1, 0.5]})])
def test_new_classifiers_search_persist_and_reload_exactly(tmp_path, name, grid):
    from pintopic.classify.persist import load_model, save_model
    from pintopic.classify.search import grid_search
    from pintopic.dataset.split import cv_folds

    X, y = blobs()
    folds = cv_folds(y, n_splits=3, seed=0)
    result = grid_search(name, X, y, grid, folds)
    n_settings = int(np.prod([len(v) for v in grid.values()]))
    assert len(result["cv_results"]) == n_settings and set(result["best_params"]) == set(grid)
    assert result["cv_f1_macro"] > 0.8
    save_model(result["model"], tmp_path / "m", {"classifier": name})
    model, _ = load_model(tmp_path / "m")
    probe = X + 0.5
    assert (model.predict(probe) == result["model"].predict(probe)).all()
    if hasattr(model[-1], "predict_proba"):
        np.testing.assert_array_equal(model.predict_proba(probe), result["model"].predict_proba(probe))
    scores = "predict_proba" if name == "wknn" else "decision_function"
    np.testing.assert_allclose(getattr(model, scores)(probe), getattr(result["model"], scores)(probe), rtol=1e-6)


def test_rbf_fast_search_matches_plain_svc_cross_validation():
    """The precomputed-kernel search scores exactly what fitting SVC(kernel="rbf") per fold scores."""
    from sklearn.metrics import f1_score

    from pintopic.classify.estimators import build_classifier
    from pintopic.classify.rbf import rbf_fold_scores
    from pintopic.dataset.split import cv_folds

    X, y = blobs(spread=2.0)
    y_index = np.unique(y, return_inverse=True)[1]
    train, val = cv_folds(y, n_splits=3, seed=0)[0]
    fast = rbf_fold_scores(X, y_index, train, val, [(1.0, 0.5), (10.0, 2.0)])
    for (C, gamma), score in zip([(1.0, 0.5), (10.0, 2.0)], fast):
        plain = build_classifier("rbf", {"C": C, "gamma": gamma}, n_features=X.shape[1]).fit(X[train], y_index[train])
        assert score == pytest.approx(f1_score(y_index[val], plain.predict(X[val]), average="macro"))


def test_multi_parameter_grids_are_resolved_and_checked():
    from pintopic.classify.catalog import resolve_grids

    grids = resolve_grids(["rbf", "logreg"], {"rbf": {"C": [1], "gamma": [2]}})
    assert grids["rbf"] == {"C": [1], "gamma": [2]} and grids["logreg"] == {"C": [0.001, 0.01, 0.1, 1]}
    with pytest.raises(PintopicError, match="gamma"):
        resolve_grids(["rbf"], {"rbf": {"C": [1]}})


# -- fusion ---------------------------------------------------------------------------------------

def _fake_store(features, name, ids, X, tta=None):
    import pyarrow as pa

    from pintopic.features.store import ids_checksum
    from pintopic.runio import write_json, write_npy, write_parquet

    folder = features / f"{name}-fake"
    write_npy(folder / "part-00000.npy", np.asarray(X, dtype=np.float32))
    write_json(folder / "failed-00000.json", [])
    write_parquet(folder / "ids-00000.parquet", pa.table({"image_id": pa.array(list(ids), pa.string())}))
    write_json(folder / "meta.json", {"spec": name, "key": folder.name, "dim": int(np.shape(X)[1]), "tta": tta,
                                      "n_rows": len(ids), "ids_sha256": ids_checksum(list(ids))})
    return folder


def test_fusion_joins_blocks_by_image_id_normalised_without_writing_a_store(tmp_path):
    from pintopic.features.fusion import component_stores, load_fused

    features = tmp_path / "features"
    a_ids = ["i1", "i2", "i3", "i4"]
    b_ids = ["i4", "i3", "i2", "i9"]  # other order, one id missing, one extra
    A = np.array([[3, 4], [1, 0], [0, 2], [5, 0]], dtype=np.float32)
    B = np.array([[0, 0, 7], [2, 0, 0], [0, 3, 0], [1, 1, 1]], dtype=np.float32)
    _fake_store(features, "lite0", a_ids, A)
    _fake_store(features, "lite1", b_ids, B)
    before = sorted(p.name for p in features.iterdir())
    ids, X = load_fused(component_stores(features, "lite0+lite1"))
    assert list(ids) == ["i2", "i3", "i4"] and X.shape == (3, 5)
    np.testing.assert_allclose(X[0], [1, 0, 0, 1, 0])  # i2: A [1,0]; B [0,3,0] -> unit blocks
    np.testing.assert_allclose(X[2], [1, 0, 0, 0, 1])  # i4: A [5,0]; B [0,0,7]
    np.testing.assert_allclose(np.linalg.norm(X[:, :2], axis=1), 1.0)
    assert sorted(p.name for p in features.iterdir()) == before  # no second copy on disk


def test_fusion_refuses_components_with_different_tta(tmp_path):
    from pintopic.features.fusion import component_stores

    features = tmp_path / "features"
    _fake_store(features, "lite0", ["a"], [[1.0]], tta="flip")
    _fake_store(features, "lite1", ["a"], [[1.0]], tta=None)
    with pytest.raises(PintopicError, match="tta"):
        component_stores(features, "lite0+lite1")
    with pytest.raises(PintopicError, match="lite0"):
        component_stores(features, "lite0+lite1", tta=None)


@pytest.mark.timeout(240)
def test_fusion_extract_evaluate_and_embed_use_every_component(tmp_path):
    from pintopic.classify import evaluate
    from pintopic.features import embed_images, extract, load_features
    from pintopic.runio import read_json

    run = tiny_run(tmp_path, per_category=6)
    fused = f"{TINY}+{TINY}@stages1"
    folders = extract(run, fused, tta="flip", **FAST)
    assert [read_json(f / "meta.json")["spec"] for f in folders] == [TINY, f"{TINY}@stages1"]
    assert not any("+" in p.name for p in (run / "features").iterdir())
    results = evaluate(run, backbones=[fused], classifiers=["logreg"], cv=2, progress=False)
    (row,) = results["rows"]
    assert row["backbone"] == fused and row["n_dropped"] == 0
    model_info = read_json(run / "results" / "models" / f"{row['key']}__logreg" / "model.json")
    assert model_info["backbone"]["component_specs"] == [TINY, f"{TINY}@stages1"]
    # predict's path: embedding a fusion embeds with each component and matches the stored rows
    ids, stored = {}, []
    for folder in folders:
        image_ids, X = load_features(folder)
        stored.append(X / np.linalg.norm(X, axis=1, keepdims=True))
        ids = image_ids
    from pintopic.dataset import image_file, load_sample

    sample = load_sample(run).set_index("image_id")
    paths = [image_file(sample.loc[i].to_dict() | {"image_id": i}) for i in ids[:3]]
    X, errors = embed_images(fused, paths, pretrained=False, tta="flip")
    assert errors == [] and X.shape == (3, sum(s.shape[1] for s in stored))
    np.testing.assert_allclose(X, np.hstack(stored)[:3], atol=1e-4)


def test_weighted_knn_votes_by_similarity_and_matches_its_fold_search():
    from pintopic.classify.wknn import WeightedKNN, softmax_votes, wknn_fold_scores

    # one near neighbour of class b outvotes four farther ones of class a at a low temperature only
    distances = np.array([[0.01, 0.2, 0.2, 0.2, 0.2]])
    labels = np.array([[1, 0, 0, 0, 0]])
    assert softmax_votes(distances, labels, 2, 0.02).argmax() == 1
    assert softmax_votes(distances, labels, 2, 10.0).argmax() == 0
    np.testing.assert_allclose(softmax_votes(distances, labels, 2, 0.1).sum(), 1.0)
    X, y = blobs(spread=2.0)
    train, val = np.arange(0, 120, 2), np.arange(1, 120, 2)
    classes, y_index = np.unique(y, return_inverse=True)
    scores = wknn_fold_scores(X, y_index, train, val, [(7, 0.1, 0), (7, 0.1, 0.01)])
    from sklearn.metrics import f1_score

    from pintopic.classify.estimators import build_classifier

    for score, whiten in zip(scores, (0, 0.01)):
        model = build_classifier("wknn", {"k": 7, "temperature": 0.1, "whiten": whiten}).fit(X[train], y[train])
        assert score == pytest.approx(f1_score(y[val], model.predict(X[val]), average="macro"))
    assert model[-1].whitening_.shape == (X.shape[1], X.shape[1])  # 16 features, 60 rows: every direction kept
    probabilities = model.predict_proba(X[val])
    assert probabilities.shape == (60, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert (model.classes_[probabilities.argmax(axis=1)] == model.predict(X[val])).all()
    assert isinstance(model[-1], WeightedKNN) and list(model.classes_) == list(classes)


def test_whitening_equalises_the_variance_of_correlated_blocks():
    """A feature block copied ten times dominates cosine similarity; whitening gives it one direction's weight."""
    from pintopic.classify.wknn import fit_whitening

    rng = np.random.default_rng(0)
    signal = rng.normal(size=(400, 1))
    X = np.hstack([np.repeat(signal, 10, axis=1) * 5.0, rng.normal(size=(400, 6))])
    mean, projection = fit_whitening(X, floor=1e-6)
    Z = (X - mean) @ projection
    variances = Z.var(axis=0, ddof=1)
    assert projection.shape[1] == 16 and np.allclose(variances[:7], 1.0, atol=0.02)
    assert variances[7:].max() < 1e-3  # the nine exact copies add no direction of their own


def test_shrinkage_lda_is_one_linear_map_equal_to_sklearn_on_the_projection():
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from pintopic.classify.lda import ShrinkageLDA

    X, y = blobs(spread=2.0, dim=24)
    model = ShrinkageLDA(shrinkage=0.3, n_components=8).fit(X, y)
    pca = PCA(n_components=8, random_state=0).fit(X)
    reference = LinearDiscriminantAnalysis(solver="eigen", shrinkage=0.3).fit(pca.transform(X), y)
    np.testing.assert_allclose(model.predict_proba(X), reference.predict_proba(pca.transform(X)), atol=1e-6)
    assert (model.predict(X) == reference.predict(pca.transform(X))).all()
    two = ShrinkageLDA(n_components=8).fit(X[y != "c2"], y[y != "c2"])  # sklearn keeps one discriminant here
    reference = LinearDiscriminantAnalysis(solver="eigen", shrinkage=0.3).fit(
        pca.fit(X[y != "c2"]).transform(X[y != "c2"]), y[y != "c2"])
    np.testing.assert_allclose(two.predict_proba(X[:5]), reference.predict_proba(pca.transform(X[:5])), atol=1e-6)


# -- multi-stage features and TTA in the store key -------------------------------------------------

def test_multi_stage_features_are_unit_blocks_and_change_the_store_key():
    from pintopic.features.builder import build_backbone
    from pintopic.features.embed import prepared_backbone
    from pintopic.features.extraction import store_key
    from pintopic.features.registry import resolve_backbone

    plain = build_backbone(TINY, pretrained=False)
    multi = build_backbone(f"{TINY}@stages2", pretrained=False)
    channels = [info["num_chs"] for info in plain.model.feature_info][-2:]
    assert multi.dim == plain.dim + sum(channels) and resolve_backbone(f"{TINY}@stages2").stages == 2
    backbone, runner = prepared_backbone(f"{TINY}@stages2", pretrained=False)  # ONNX path (auto on CPU)
    vectors = runner(np.random.default_rng(0).integers(0, 255, (2, *backbone.preprocessing.input_size), dtype=np.uint8))
    edges = np.cumsum([0, *channels, plain.dim])
    for start, stop in zip(edges[:-1], edges[1:]):
        np.testing.assert_allclose(np.linalg.norm(vectors[:, start:stop], axis=1), 1.0, atol=1e-4)
    keys = {store_key(plain), store_key(plain, tta="flip"), store_key(multi), store_key(multi, tta="flip")}
    assert len(keys) == 4
    with pytest.raises(PintopicError, match="timm"):
        resolve_backbone("openclip:ViT-B-32/laion2b_s34b_b79k@stages2")


def test_view_modifiers_override_preprocessing_and_key_the_store():
    from pintopic.features.builder import build_backbone
    from pintopic.features.extraction import store_key
    from pintopic.features.preprocess import ImagePreprocessor
    from pintopic.features.registry import resolve_backbone

    plain = build_backbone(TINY, pretrained=False)
    whole = build_backbone(f"{TINY}@crop1.0@size96", pretrained=False)
    assert plain.preprocessing.crop_pct < 1.0
    assert whole.preprocessing.crop_pct == 1.0 and whole.preprocessing.input_size == (3, 96, 96)
    assert whole.preprocessing.mean == plain.preprocessing.mean and whole.dim == plain.dim
    assert store_key(whole) != store_key(plain)
    assert resolve_backbone(f"{TINY}@stages1@squash").stages == 1
    # a frame-filling image: crop 1.0 keeps its red left edge, the model's centre crop cuts it off
    from PIL import Image

    image = Image.new("RGB", (120, 120), "white")
    image.paste((255, 0, 0), (0, 0, 2, 120))
    for backbone, edge_kept in ((plain, False), (build_backbone(f"{TINY}@crop1.0", pretrained=False), True)):
        pixels = ImagePreprocessor(backbone.preprocessing).transform(image)
        assert (pixels[1, :, 0].mean() < 128) == edge_kept
    for bad in (f"{TINY}@crop1.5", f"{TINY}@crop0.9@crop1.0", f"{TINY}@bogus"):
        with pytest.raises(PintopicError):
            resolve_backbone(bad)


@pytest.mark.timeout(120)
def test_tta_is_recorded_in_meta(tmp_path):
    from pintopic.features import extract
    from pintopic.runio import read_json

    run = tiny_run(tmp_path, per_category=2)
    (flip,) = extract(run, TINY, tta="flip", **FAST)
    (plain,) = extract(run, TINY, **FAST)
    assert read_json(flip / "meta.json")["tta"] == "flip" and read_json(plain / "meta.json")["tta"] is None
    assert flip != plain


# -- zero-shot ------------------------------------------------------------------------------------

def test_zero_shot_head_from_text_embeddings_scores_high():
    from sklearn.metrics import f1_score

    from pintopic.classify.zeroshot import ZeroShotClassifier

    X, y = blobs(n_per_class=60, n_classes=4, dim=32, spread=0.8)
    classes = np.unique(y)
    text = np.stack([X[y == c].mean(axis=0) for c in classes])  # stand-in for the text tower
    head = ZeroShotClassifier(text, classes).fit()
    assert f1_score(y, head.predict(X), average="macro") >= 0.9
    probabilities = head.predict_proba(X)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert (classes[probabilities.argmax(axis=1)] == head.predict(X)).all()


@pytest.fixture
def tiny_clip(tmp_path):
    """A tiny randomly initialised open_clip config (its tokenizer ships with open_clip; nothing downloaded)."""
    import open_clip

    config = {"embed_dim": 16,
              "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    path = tmp_path / "pintopic-tiny-clip.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)
    return "openclip:pintopic-tiny-clip/"


@pytest.mark.timeout(240)
def test_open_clip_path_end_to_end_with_a_tiny_model(tmp_path, tiny_clip):
    from pintopic.classify import evaluate
    from pintopic.classify.persist import load_model
    from pintopic.classify.zeroshot import text_class_embeddings
    from pintopic.features import extract, load_features
    from pintopic.predict import zero_shot_predict
    from pintopic.runio import read_json

    run = tiny_run(tmp_path, per_category=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (folder,) = extract(run, tiny_clip, **FAST)
        meta = read_json(folder / "meta.json")
        assert meta["library"] == "openclip" and meta["dim"] == 16 and meta["preprocessing"]["input_size"] == [3, 32, 32]
        ids, X = load_features(folder)
        assert X.shape == (12, 16) and np.isfinite(X).all()
        text = text_class_embeddings(tiny_clip, ["red", "food_drink"], ["a photo of {}.", "a pin about {}."],
                                     pretrained=False)
        assert text.shape == (2, 16)
        np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, rtol=1e-5)
        results = evaluate(run, backbones=[tiny_clip], classifiers=["zeroshot", "logreg"], cv=2, progress=False)
        assert {row["classifier"] for row in results["rows"]} == {"zeroshot", "logreg"}
        zero = next(row for row in results["rows"] if row["classifier"] == "zeroshot")
        model, info = load_model(run / "results" / "models" / f"{zero['key']}__zeroshot")
        assert info["classifier"] == "zeroshot" and list(model.classes_) == ["blue", "green", "red"]
        images = sorted((tmp_path / "source").rglob("*.jpg"))[:2]
        out = zero_shot_predict(tiny_clip, ["red", "green", "blue"], images, top_k=2, pretrained=False)
        from pintopic.predict import predict

        from_folder = predict(run / "results" / "models" / f"{zero['key']}__zeroshot", images, top_k=2)
    assert [len(entry["top"]) for entry in out] == [2, 2] and not any(entry.get("error") for entry in out)
    assert {e["category"] for entry in out for e in entry["top"]} <= {"red", "green", "blue"}
    assert all(entry["score_kind"] == "probability" for entry in out) and len(from_folder) == 2
    # the same text tower and images: the saved zero-shot row predicts what the no-training path predicts
    assert [e["top"][0]["category"] for e in from_folder] == [e["top"][0]["category"] for e in out]


def test_zero_shot_needs_a_text_tower():
    from pintopic.classify.zeroshot import text_class_embeddings

    with pytest.raises(PintopicError, match="openclip"):
        text_class_embeddings("lite0", ["a", "b"])


# -- ensembles ------------------------------------------------------------------------------------

def test_ensemble_never_sees_test_labels():

    from sklearn.metrics import f1_score

    from pintopic.classify.ensemble import Candidate, fit_ensemble
    from pintopic.dataset.split import cv_folds

    X, y = blobs(n_per_class=50, n_classes=3, dim=12, spread=2.5, seed=1)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    train, test = order[:120], order[120:]
    y_train, y_test = y[train], y[test]
    folds = cv_folds(y_train, n_splits=3, seed=0)
    candidates = [Candidate("blob/logreg", "logreg", {"C": 1.0}, X[train], X[test]),
                  Candidate("noisy/logreg", "logreg", {"C": 1.0}, X[train] + rng.normal(size=X[train].shape),
                            X[test] + rng.normal(size=X[test].shape)),
                  Candidate("blob/knn", "knn", {"k": 5}, X[train], X[test]),
                  Candidate("blob/lsvm", "lsvm", {"C": 1.0}, X[train], X[test])]  # no probabilities: not a candidate
    first = fit_ensemble(candidates, y_train, folds)
    second = fit_ensemble(candidates, y_train, folds)
    permuted = rng.permutation(y_test)
    assert first["members"] == second["members"] and "blob/lsvm" not in first["candidates"]
    assert (first["test_predictions"] == second["test_predictions"]).all()
    # scoring against permuted test labels changes only the score, never the ensemble
    assert f1_score(y_test, first["test_predictions"], average="macro") > f1_score(
        permuted, first["test_predictions"], average="macro")
    # the training labels do drive the selection
    shuffled = fit_ensemble(candidates, rng.permutation(y_train), folds)
    assert shuffled["cv_f1_macro"] < first["cv_f1_macro"]
    assert first["cv_f1_macro"] >= max(first["candidate_cv_f1_macro"].values())


@pytest.mark.timeout(240)
def test_ensemble_is_a_row_of_evaluate_and_ignores_test_labels(tmp_path):
    """Relabelling the test images (split kept) changes the ensemble's score, never its members or predictions."""
    import pyarrow.parquet as pq

    from pintopic.classify import evaluate
    from pintopic.features import extract

    run = tiny_run(tmp_path, per_category=8)
    extract(run, [TINY, f"{TINY}@stages1"], **FAST)
    classifiers = ["logreg", "knn", "ensemble"]
    results = evaluate(run, backbones=[TINY, f"{TINY}@stages1"], classifiers=classifiers, cv=2, progress=False)
    ensemble = next(row for row in results["rows"] if row["backbone"] == "ensemble")
    assert {row["classifier"] for row in results["rows"]} == {"logreg", "knn", "ensemble"}
    assert 1 <= len(ensemble["best_params"]["members"]) <= 4 and ensemble["n_test"] > 0
    before = pq.read_table(run / "results" / "predictions" / "ensemble.parquet").to_pandas()

    from pintopic.classify.ensemble import ensemble_row
    from pintopic.dataset import load_sample
    from pintopic.dataset.split import load_or_make_split
    from pintopic.features.fusion import open_store  # noqa: F401 - stores are real here
    from pintopic.runio import read_json

    sample = load_sample(run)
    split_frame, _ = load_or_make_split(run / "results", sample, test_size=0.2, split="stratified", seed=0)
    labels = dict(zip(sample["image_id"], sample["category"].astype(str)))
    test_ids = list(split_frame.loc[split_frame["part"] == "test", "image_id"])
    rng = np.random.default_rng(3)
    relabelled = dict(labels)
    for image_id, label in zip(test_ids, rng.permutation([labels[i] for i in test_ids])[::-1]):
        relabelled[image_id] = str(label)
    members = []
    for folder in sorted((run / "features").iterdir()):
        meta = read_json(folder / "meta.json")
        for row in results["rows"]:
            if row.get("key") == folder.name and row["classifier"] in ("logreg", "knn"):
                members.append({"spec": meta["spec"], "classifier": row["classifier"], "params": row["best_params"],
                                "folder": folder, "meta": meta, "metric": "euclidean"})
    from pintopic.dataset.split import cv_folds

    row, predictions = ensemble_row(members, split_frame, relabelled, sorted(set(labels.values())),
                                    folds_of=lambda ids, y: cv_folds(y, n_splits=2, seed=0), seed=0)
    after = predictions.to_pandas()
    assert row["best_params"] == ensemble["best_params"] and row["cv_f1_macro"] == ensemble["cv_f1_macro"]
    assert list(after["pred"]) == list(before["pred"]) and list(after["image_id"]) == list(before["image_id"])
    assert list(after["true"]) != list(before["true"])
