"""Label issues and training through the noise (issue 21) on a small noisy crawl; the truth file never reaches training."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_classify_evaluate import class_features, write_store

from pintopic.classify import evaluate
from pintopic.classify.boards import board_posterior, calibrate, fit_temperature
from pintopic.classify.label_issues import flag_label_issues, flag_quality
from pintopic.classify.noise_aware import OPTIONS, choose_option
from pintopic.classify.oof import fit_basis, out_of_fold, project
from pintopic.classify.soft_labels import soft_labels
from pintopic.dataset import ingest, load_sample, make_crawl
from pintopic.dataset.split import cv_folds
from pintopic.runio import read_json

GRIDS = {"knn": {"k": [1, 5]}}


@pytest.fixture(scope="module")
def noisy_run(colour_folders: Path, tmp_path_factory) -> tuple[Path, Path, Path]:
    """``(run, truth, crawl)``: a noisy crawl of the colour folders, ingested, with a synthetic feature store in which
    each pin's vector sits near its TRUE category's centre (what a good backbone would give)."""
    base = tmp_path_factory.mktemp("noisy-run")
    crawl, run = base / "crawl", base / "run"
    make_crawl(colour_folders, crawl, users=4, seed=5, off_theme=0.2, wrong_boards=0.2, board_size=(10, 14))
    truth = base / "truth.parquet"
    shutil.move(crawl / "truth.parquet", truth)  # outside the crawl, so a read of it can only be deliberate
    ingest(crawl, run, workers=1, progress=False)
    sample = load_sample(run)
    true = sample[["user", "board", "pin"]].merge(pd.read_parquet(truth), on=["user", "board", "pin"])["category"]
    write_store(run, "synthetic-noise01", sample["image_id"], class_features(true, sorted(set(true)), separation=3.0))
    return run, truth, crawl


def _run_copy(noisy_run, tmp_path: Path) -> Path:
    shutil.copytree(noisy_run[0], tmp_path / "run")
    return tmp_path / "run"


def test_label_issues_find_the_injected_wrong_boards(noisy_run, tmp_path: Path, read_audit):
    run, truth_path = _run_copy(noisy_run, tmp_path), noisy_run[1]
    evaluate(run, classifiers=["knn"], grids=GRIDS, cv=3, split="group:board", label_issues=True, progress=False)
    assert str(truth_path) not in read_audit and not [p for p in read_audit if Path(p).name == "truth.parquet"]
    truth = pd.read_parquet(truth_path)
    issues = pd.read_parquet(run / "results" / "label_issues.parquet")
    assert list(issues.columns) == ["image_id", "user", "board", "pin", "given", "suggested", "score", "reason"]
    assert issues["score"].is_monotonic_decreasing
    wrong = truth[truth["wrong_board"]]
    assert wrong[["user", "board"]].drop_duplicates().shape[0] >= 2
    right = truth[~truth["wrong_board"] & ~truth["off_theme"]]
    assert set(wrong["category"]) <= set(right["category"])  # each wrong board's theme is also filed rightly elsewhere
    for (user, board), pins in wrong.groupby(["user", "board"]):
        on_theme = pins[~pins["off_theme"]]
        found = on_theme.merge(issues, on=["user", "board", "pin"])
        assert len(found) >= 0.8 * len(on_theme), f"wrong board {user}/{board} not found"
        assert (found["reason"] == "wrong board").mean() >= 0.8
        assert (found["suggested"] == found["category"]).mean() >= 0.8  # the suggestion is the board's real theme
    noise = read_json(run / "results" / "noise.json")
    assert noise["options"]["chosen"] in OPTIONS and set(noise["options"]["cv_f1_macro"]) == set(OPTIONS)
    assert "against_truth" not in noise["flags"] and "true" not in noise["options"]["test"]["none"]
    probabilities = pd.read_parquet(run / "results" / "pin_probabilities.parquet")
    assert len(probabilities) == len(load_sample(run)) and set(probabilities["part"]) == {"train", "test"}
    assert np.allclose(probabilities.filter(like="p:").sum(axis=1), 1.0)


def test_truth_scores_both_labels_and_reruns_are_noops(noisy_run, tmp_path: Path):
    run, truth_path = _run_copy(noisy_run, tmp_path), noisy_run[1]
    arguments = {"classifiers": ["knn"], "grids": GRIDS, "cv": 3, "split": "group:board", "label_issues": True,
                 "progress": False}
    evaluate(run, truth=truth_path, **arguments)
    noise = read_json(run / "results" / "noise.json")
    quality = noise["flags"]["against_truth"]["board"]
    assert quality["precision"] >= 0.6 and quality["recall"] >= 0.6
    for scores in noise["options"]["test"].values():
        assert set(scores) == {"given", "true"}
        assert scores["true"]["accuracy"] > scores["given"]["accuracy"]  # the given test labels are noisy
    assert set(noise["pairs_on_true_labels"]) == {"synthetic-noise01__knn"}
    before = os.stat(run / "results" / "noise.json").st_mtime_ns
    evaluate(run, truth=truth_path, **arguments)
    assert os.stat(run / "results" / "noise.json").st_mtime_ns == before


def test_extract_never_reads_the_truth_file(noisy_run, tmp_path: Path, read_audit):
    from pintopic.features import extract

    run = _run_copy(noisy_run, tmp_path)
    shutil.copy(noisy_run[1], tmp_path / "truth.parquet")  # beside the run, as a crawl's truth would be at hand
    read_audit.clear()
    extract(run, ["timm:test_efficientnet"], pretrained=False, batch_size=64, workers=1, runtime="torch", progress=False)
    assert read_audit and not [p for p in read_audit if Path(p).name == "truth.parquet"]


def test_flagging_on_synthetic_boards_beats_chance_and_names_reasons():
    rng = np.random.default_rng(0)
    boards, users, given, true = [], [], [], []
    for b in range(12):  # 12 boards of 20 pins; board 0 is filed wrongly; 3 pins per board are off-theme
        theme = b % 3
        for i in range(20):
            boards.append(f"u{b % 4}/board{b}")
            users.append(f"u{b % 4}")
            true.append(theme if i >= 3 else (theme + 1 + i % 2) % 3)
            given.append((theme + 1) % 3 if b == 0 else theme)
    true, given = np.array(true), np.array(given)
    P = np.full((len(true), 3), 0.15)
    P[np.arange(len(true)), true] = 0.7  # a decent classifier: 0.7 on the true category
    P += rng.uniform(0, 0.05, P.shape)
    P /= P.sum(axis=1, keepdims=True)
    issues = flag_label_issues(P, given, boards, users)
    quality = flag_quality(issues["flagged"], given != true)
    assert quality["precision"] >= 0.8 and quality["recall"] >= 0.8
    board0 = np.array([b == "u0/board0" for b in boards])
    assert (issues.loc[board0 & issues["flagged"].to_numpy(), "reason"] == "wrong board").all()
    assert (issues.loc[~board0 & issues["flagged"].to_numpy(), "reason"] == "off-theme pin").all()


def synthetic_crawl(seed: int = 0, separation: float = 1.0, dim: int = 8):
    """``(X, given, true, boards, users)``: 8 users x 4 boards of 20 pins over 4 categories; each user likes two, a board
    holds 5 off-theme pins of its owner's other interest, 3 boards are filed under a wrong category; features near
    each pin's TRUE category's centre, close enough to the others that a model gets about 3 pins in 4 right."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, dim)) * separation
    boards, users, given, true = [], [], [], []
    for user in range(8):
        likes = [user % 4, (user + 1 + user // 4) % 4]
        for board in range(4):
            theme, other = likes[board % 2], likes[1 - board % 2]
            listed = (theme + 2) % 4 if (user * 4 + board) % 11 == 3 else theme
            for pin in range(20):
                boards.append(f"u{user}/b{board}")
                users.append(f"u{user}")
                true.append(other if pin < 5 else theme)
                given.append(listed)
    true, given = np.array(true), np.array(given)
    return centres[true] + rng.normal(size=(len(true), dim)), given, true, np.array(boards), np.array(users)


def test_soft_labels_from_the_board_mixture_recover_the_true_categories():
    X, given, true, boards, users = synthetic_crawl()
    assert 0.65 < np.mean(given == true) < 0.7  # 25 % off-theme pins, 3 of 32 boards wrongly filed
    Z, classes = project(fit_basis(X), X), np.arange(4)
    folds = cv_folds(given, boards, n_splits=4)
    pred_probs = out_of_fold(Z, given, folds, classes, n_jobs=1)
    one, _ = soft_labels(Z, given, boards, users, folds, classes, pred_probs=pred_probs, max_rounds=1)
    labels, info = soft_labels(Z, given, boards, users, folds, classes, pred_probs=pred_probs)
    assert np.allclose(labels.sum(axis=1), 1.0) and info["rounds"] > 1
    accuracy = np.mean(labels.argmax(axis=1) == true)
    assert accuracy >= np.mean(given == true) + 0.15  # far cleaner than the given labels
    assert accuracy >= np.mean(pred_probs.argmax(axis=1) == true) + 0.05  # and than the model alone
    assert accuracy >= np.mean(one.argmax(axis=1) == true)  # EM rounds add to the first posterior
    wrong = [b for b in np.unique(boards) if np.bincount(true[boards == b]).argmax() != given[boards == b][0]]
    on_wrong = np.isin(boards, wrong)
    assert len(wrong) == 3 and np.mean(labels.argmax(axis=1)[on_wrong] == true[on_wrong]) >= 0.8


def test_the_treatment_cv_never_learns_from_the_held_out_fold(monkeypatch):
    """Flags and soft labels for each CV fold come from the other folds alone: scrambling a fold's given labels
    changes its score, never its own held-out probabilities (with flags computed once on all training pins it would)."""
    from pintopic.classify import noise_aware

    monkeypatch.setattr(noise_aware, "BALANCES", (0.5,))  # one candidate, so the choice cannot change
    X, given, _, boards, users = synthetic_crawl(seed=1)
    folds = cv_folds(given, boards, n_splits=3)
    held_out, other = folds[0][1], folds[1][1]
    scrambled = given.copy()
    scrambled[held_out] = (given[held_out] + 1) % 4
    first, second = (choose_option(X, labels, boards, users, folds, np.arange(4), options=("posterior",), n_jobs=1)
                     for labels in (given, scrambled))
    assert np.allclose(first["oof"][held_out], second["oof"][held_out])
    assert not np.allclose(first["oof"][other], second["oof"][other])  # the other folds do learn from those pins
    assert first["cv"]["posterior"] != second["cv"]["posterior"]


def test_the_temperature_undoes_a_sharpening_and_the_mixture_names_interests():
    X, given, true, boards, users = synthetic_crawl(seed=2, separation=0.8)
    P = out_of_fold(project(fit_basis(X), X), given, cv_folds(given, boards, n_splits=4), np.arange(4), n_jobs=1)
    temperature = fit_temperature(P, boards, given, users=users)
    assert fit_temperature(calibrate(P, 0.5), boards, given, users=users) == pytest.approx(2 * temperature, rel=0.2)
    assert np.allclose(calibrate(P, 1.0), P) and (calibrate(P, 0.5).max(axis=1) >= P.max(axis=1) - 1e-12).all()
    posterior = board_posterior(P, boards, users=users)
    owner = users == "u0"  # likes categories 0 and 1: off-theme pins on its boards are of these two
    assert posterior.interests[owner][:, :2].sum(axis=1).min() > 0.7
    assert np.mean(posterior.pins.argmax(axis=1) == true) > np.mean(P.argmax(axis=1) == true)


STUDY = """
[run]
folder = "run"
[dataset]
source = "{crawl}"
[features]
backbones = ["timm:test_efficientnet"]
pretrained = false
batch_size = 64
runtime = "torch"
[classify]
classifiers = ["knn"]
split = "group:board"
cv = 3
label_issues = true
truth = "{truth}"
[classify.grids.knn]
k = [1, 5]
[profile]
enabled = true
"""


def test_a_study_with_label_issues_and_profiles(noisy_run, tmp_path: Path):
    from pintopic.run import run_study

    config = tmp_path / "noisy.toml"
    config.write_text(STUDY.format(crawl=noisy_run[2], truth=noisy_run[1]))
    run_study(config, progress=False)
    results = tmp_path / "run" / "results"
    for name in ("label_issues.parquet", "noise.json", "pin_probabilities.parquet", "boards.parquet", "users.parquet",
                 "profile.json"):
        assert (results / name).is_file(), name
    assert "against_truth" in read_json(results / "noise.json")["flags"]
    assert read_json(results / "profile.json")["truth"]["boards"]["evaluated"] >= 1
    report = (tmp_path / "run" / "report.html").read_text()
    assert 'id="label-issues"' in report and 'id="boards-users"' in report and 'id="label-issue-grid"' in report
    assert "the same under user rule counts" in report  # every other user rule's divergence beside the chosen one
