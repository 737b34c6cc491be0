"""The fast grid search picks what plain GridSearchCV picks, with the same CV scores."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from pintopic.classify.catalog import resolve_grids
from pintopic.classify.estimators import build_classifier
from pintopic.classify.lsvm import SquaredHingeSVC, squared_hinge_path
from pintopic.classify.search import grid_search
from pintopic.dataset.split import cv_folds
from pintopic.errors import PintopicError


def overlapping_classes(n: int = 600, dim: int = 24, n_classes: int = 6, seed: int = 0):
    """Blobs that overlap, so hyper-parameters matter and scores differ between grid values."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    X = rng.normal(size=(n_classes, dim))[y] * 0.6 + rng.normal(size=(n, dim))
    return X.astype(np.float32), np.array([f"cat{v}" for v in y])


def baseline(estimator, param, values, X, y, seed):
    search = GridSearchCV(Pipeline([("scale", StandardScaler()), ("model", estimator)]),
                          {f"model__{param}": values}, scoring="f1_macro",
                          cv=StratifiedKFold(5, shuffle=True, random_state=seed))
    return search.fit(X, y)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_grid_matches_gridsearchcv_exactly(metric):
    from sklearn.neighbors import KNeighborsClassifier

    X, y = overlapping_classes()
    ks = [1, 5, 10, 20, 50]
    ours = grid_search("knn", X, y, {"k": ks}, cv_folds(y, n_splits=5, seed=0), metric=metric, seed=0)
    reference = baseline(KNeighborsClassifier(metric=metric), "n_neighbors", ks, X, y, 0)
    assert np.allclose([r["mean_f1_macro"] for r in ours["cv_results"]], reference.cv_results_["mean_test_score"], atol=1e-12)
    assert ours["best_params"]["k"] == reference.best_params_["model__n_neighbors"]


def test_knn_votes_break_ties_like_kneighborsclassifier():
    # 2 neighbours of different classes tie at k=2; KNeighborsClassifier gives the lower class index
    X = np.array([[0.0], [1.0], [3.0], [10.0], [11.0], [13.0]], dtype=np.float32)
    y = np.array(["b", "a", "b", "a", "b", "a"])
    from sklearn.metrics import f1_score
    from sklearn.neighbors import KNeighborsClassifier

    from pintopic.classify.knn import knn_fold_scores

    train, val = np.array([0, 1, 3, 4]), np.array([2, 5])
    classes, y_index = np.unique(y, return_inverse=True)
    scaler = StandardScaler().fit(X[train])
    expected = KNeighborsClassifier(n_neighbors=2).fit(scaler.transform(X[train]), y_index[train]).predict(scaler.transform(X[val]))
    ours = knn_fold_scores(X, y_index, train, val, [2])
    assert ours[0] == pytest.approx(f1_score(y_index[val], expected, average="macro"))


@pytest.mark.timeout(120)
def test_svm_path_matches_linearsvc():
    X, y = overlapping_classes()
    X = StandardScaler().fit_transform(X)
    classes, y_index = np.unique(y, return_inverse=True)
    Cs = [0.01, 0.1, 1, 10, 100]
    for C, weights in zip(Cs, squared_hinge_path(X, y_index, len(classes), Cs)):
        reference = LinearSVC(C=C, tol=1e-8, max_iter=200_000).fit(X, y)
        ours = SquaredHingeSVC(C=C).set_weights(weights, classes)
        assert np.abs(ours.coef_ - reference.coef_).max() < 1e-3 * max(1.0, np.abs(reference.coef_).max())
        assert (ours.predict(X) == reference.predict(X)).mean() >= 0.998


def test_svm_binary_matches_linearsvc():
    X, y = overlapping_classes(n_classes=2)
    reference = LinearSVC(C=1.0, tol=1e-8, max_iter=100_000).fit(X, y)
    ours = SquaredHingeSVC(C=1.0).fit(X, y)
    assert np.allclose(ours.coef_, reference.coef_, atol=1e-4)
    assert np.array_equal(ours.predict(X), reference.predict(X))


@pytest.mark.timeout(120)
def test_lsvm_grid_selects_like_gridsearchcv():
    X, y = overlapping_classes()
    Cs = [0.01, 0.1, 1, 10, 100]
    ours = grid_search("lsvm", X, y, {"C": Cs}, cv_folds(y, n_splits=5, seed=0), seed=0)
    reference = baseline(LinearSVC(tol=1e-8, max_iter=200_000), "C", Cs, X, y, 0)
    assert np.allclose([r["mean_f1_macro"] for r in ours["cv_results"]], reference.cv_results_["mean_test_score"], atol=0.005)
    assert ours["best_params"]["C"] == reference.best_params_["model__C"]


@pytest.mark.timeout(120)
def test_nn_grid_matches_gridsearchcv_of_mlpclassifier():
    """The PyTorch-trained grid (nn) scores and chooses what GridSearchCV(MLPClassifier) does (nn_sklearn, the reference)."""
    X, y = overlapping_classes(n=300)
    sizes = [32, 128]
    ours = grid_search("nn", X, y, {"batch_size": sizes}, cv_folds(y, n_splits=5, seed=0), seed=0)
    reference = GridSearchCV(build_classifier("nn_sklearn", seed=0), {"model__batch_size": sizes}, scoring="f1_macro",
                             cv=StratifiedKFold(5, shuffle=True, random_state=0)).fit(X, y)
    assert np.allclose([r["mean_f1_macro"] for r in ours["cv_results"]], reference.cv_results_["mean_test_score"], atol=0.005)
    assert ours["best_params"]["batch_size"] == reference.best_params_["model__batch_size"]
    assert np.mean(ours["model"].predict(X) == reference.best_estimator_.predict(X)) >= 0.99
    assert type(ours["model"][-1]).__name__ == "BatchedMLPClassifier"


def test_torch_networks_follow_mlpclassifier_step_for_step():
    """Same initial weights, early-stopping split and shuffles: with float32 products the weights agree with
    MLPClassifier's to float rounding, and so do the epochs and every validation score."""
    from sklearn.neural_network import MLPClassifier

    from pintopic.classify.mlp_torch import Rule, train_networks

    X, y = overlapping_classes(n=400)
    classes, y_index = np.unique(y, return_inverse=True)
    for batch in (32, 50):
        reference = MLPClassifier((64,), batch_size=batch, early_stopping=True, random_state=3).fit(X, y)
        [net] = train_networks(X, y_index, [np.arange(len(y))], Rule(hidden=64, batch_size=batch, seed=3, matmul="float32"),
                               n_classes=len(classes), standardize=False, threads=1)
        assert net["n_iter"] == reference.n_iter_ and net["validation_scores"] == reference.validation_scores_
        for ours, theirs in zip(net["coefs"] + net["intercepts"], reference.coefs_ + reference.intercepts_):
            assert np.allclose(ours, theirs, atol=1e-4)


def test_bfloat16_products_leave_the_precision_setting_as_found_and_the_networks_close():
    """bfloat16 products (oneDNN's fpmath mode, only inside training steps) restore torch's setting afterwards and
    learn networks that predict like the float32 ones."""
    import torch

    from pintopic.classify.mlp_torch import Rule, train_networks

    X, y = overlapping_classes(n=400)
    classes, y_index = np.unique(y, return_inverse=True)
    before = torch.backends.mkldnn.matmul.fp32_precision
    nets = {}
    for matmul in ("float32", "bfloat16"):
        [nets[matmul]] = train_networks(X, y_index, [np.arange(len(y))], Rule(hidden=64, batch_size=32, seed=3, matmul=matmul),
                                        n_classes=len(classes), standardize=False, threads=1)
        assert torch.backends.mkldnn.matmul.fp32_precision == before
    predictions = [np.maximum(X @ net["coefs"][0] + net["intercepts"][0], 0) @ net["coefs"][1] for net in nets.values()]
    assert np.mean(predictions[0].argmax(1) == predictions[1].argmax(1)) >= 0.95


def test_nn_refit_in_a_worker_process_is_the_in_process_fit(monkeypatch):
    """Above PARALLEL_MIN_VALUES the chosen network is refitted in a joblib worker (torch already loaded there);
    the model that comes back is the one an in-process fit gives."""
    import pintopic.classify.nn as nn
    from pintopic.classify.catalog import Context

    X, y = overlapping_classes(n=300)
    context = Context(seed=0, n_jobs=2, n_samples=len(y), n_classes=6, n_features=X.shape[1])
    here = nn.refit(X, y, {"batch_size": 32}, None, context)
    monkeypatch.setattr(nn, "PARALLEL_MIN_VALUES", 0)
    there = nn.refit(X, y, {"batch_size": 32}, None, context)
    for ours, theirs in zip(here[-1].coefs_ + here[-1].intercepts_, there[-1].coefs_ + there[-1].intercepts_):
        assert np.array_equal(ours, theirs)
    assert list(there.classes_) == list(here.classes_)


def test_training_networks_does_not_load_torch_dynamo():
    """The stack calls torch's fused Adam kernel itself: torch.optim's wrappers import torch._dynamo, 1.2 s in
    every worker process that trains."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from pintopic.classify.mlp_torch import Rule, train_networks\n"
            "X = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32); y = np.arange(200) % 4\n"
            "train_networks(X, y, [np.arange(200)], Rule(hidden=8, batch_size=32, max_epochs=2), n_classes=4)\n"
            "print('torch._dynamo' in sys.modules)\n")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_grids_are_validated():
    assert resolve_grids(["knn"])["knn"] == {"k": [1, 5, 10, 20, 50]}
    assert resolve_grids(["lsvm"], {"lsvm": {"C": [1]}}) == {"lsvm": {"C": [1]}}
    with pytest.raises(PintopicError, match="must give a non-empty list"):
        resolve_grids(["knn"], {"knn": {"n_neighbors": [3]}})
    with pytest.raises(PintopicError, match="unknown classifier"):
        resolve_grids(["svm"])


def test_too_few_images_for_the_folds_is_a_clear_error():
    with pytest.raises(PintopicError, match="at least 5 training images per category"):
        cv_folds(np.array(["a"] * 10 + ["b"] * 3), n_splits=5)


def test_lsvm_split_into_class_blocks_matches_one_block():
    """Classes solved in separate blocks (how folds and the refit share processes) give the same scores and model."""
    from joblib import Parallel

    from pintopic.classify.lsvm import fit_lsvm, lsvm_path_search

    X, y = overlapping_classes(n=300)
    classes, y_index = np.unique(y, return_inverse=True)
    folds = cv_folds(y, n_splits=3, seed=0)
    Cs = [1.0, 0.01, 0.1]
    whole = lsvm_path_search(X, y_index, folds, Cs, Parallel(n_jobs=1), n_blocks=1)
    in_order = lsvm_path_search(X, y_index, folds, sorted(Cs), Parallel(n_jobs=1), n_blocks=1)
    assert np.allclose(np.asarray(whole)[:, np.argsort(Cs)], in_order, atol=1e-12)  # scores follow the grid's order
    assert np.allclose(lsvm_path_search(X, y_index, folds, Cs, Parallel(n_jobs=1), n_blocks=4), whole, atol=1e-12)
    blocked = fit_lsvm(X, y, 0.1, Cs, Parallel(n_jobs=1), n_blocks=4)
    single = build_classifier("lsvm", {"C": 0.1}).fit(X, y)
    assert np.allclose(blocked[-1].coef_, single[-1].coef_, atol=1e-5)
    assert np.array_equal(blocked.predict(X), single.predict(X))
    assert list(blocked.classes_) == list(classes)
