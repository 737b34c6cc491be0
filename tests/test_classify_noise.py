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
from pintopic.classify.label_issues import flag_label_issues, flag_quality
from pintopic.classify.noise_aware import OPTIONS
from pintopic.dataset import ingest, load_sample, make_crawl
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
