"""Boards and users (issue 21): aggregation of hand-made pin probabilities gives the hand-computed answers."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pintopic.errors import PintopicError
from pintopic.predict import profile_scoring
from pintopic.predict.aggregate import (
    board_scores,
    js_divergence,
    share_interval,
    user_shares,
)
from pintopic.predict.profile import profile

# Board A (user u1): two pins lean x a little, one is sure of y; board B (u1): both y; board C (u2): one x pin.
PINS = [("u1", "A", "a1", "x", 0.55), ("u1", "A", "a2", "x", 0.55), ("u1", "A", "a3", "x", 0.01),
        ("u1", "B", "b1", "y", 0.2), ("u1", "B", "b2", "y", 0.3), ("u2", "C", "c1", "x", 0.9)]
TRUE = {"a1": "x", "a2": "x", "a3": "y", "b1": "y", "b2": "y", "c1": "x"}
P = np.array([[p, 1 - p] for *_, p in PINS])
BOARD_INDEX = np.array([0, 0, 0, 1, 1, 2])


def test_board_rules_on_hand_made_probabilities():
    assert np.allclose(board_scores(P, BOARD_INDEX, "mean-log")[0], [-1.9336147, -0.5356886])
    assert np.allclose(board_scores(P, BOARD_INDEX, "mean")[0], [0.37, 0.63])
    assert board_scores(P, BOARD_INDEX, "mean-log").argmax(axis=1).tolist() == [1, 1, 0]
    assert board_scores(P, BOARD_INDEX, "mean").argmax(axis=1).tolist() == [1, 1, 0]
    assert board_scores(P, BOARD_INDEX, "vote").argmax(axis=1).tolist() == [0, 1, 0]  # two of A's three pins say x


def test_user_shares_intervals_and_divergence():
    shares = user_shares(P, np.array([0, 0, 0, 0, 0, 1]))
    assert np.allclose(shares, [[0.322, 0.678], [0.9, 0.1]])
    low, high = share_interval(P[:5], BOARD_INDEX[:5], resamples=199, seed=0)
    assert (low <= shares[0] + 1e-9).all() and (shares[0] <= high + 1e-9).all()
    # two boards: a resample is all-A (x 0.37), all-B (x 0.25) or mixed, so the bounds are the one-board shares
    assert np.allclose(low, [0.25, 0.63], atol=1e-9) and np.allclose(high, [0.37, 0.75], atol=1e-9)
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_divergence([0.3, 0.7], [0.3, 0.7]) == pytest.approx(0.0)
    assert js_divergence([0.322, 0.678], [0.4, 0.6]) == pytest.approx(0.0047633, abs=1e-6)


def _predictions(tmp_path: Path) -> Path:
    """A crawl-wide predictions parquet in the top-k form (image_id, user, board, pin, top1/score1, top2/score2)."""
    rows = []
    for user, board, pin, given, p in PINS:
        ranked = sorted([("x", p), ("y", 1 - p)], key=lambda item: -item[1])
        rows.append({"image_id": pin, "user": user, "board": board, "pin": pin, "given": given,
                     "top1": ranked[0][0], "score1": ranked[0][1], "top2": ranked[1][0], "score2": ranked[1][1]})
    path = tmp_path / "predictions.parquet"
    pd.DataFrame(rows).to_parquet(path)
    truth = pd.DataFrame({"user": [r[0] for r in PINS], "board": [r[1] for r in PINS], "pin": list(TRUE),
                          "category": list(TRUE.values())})
    truth.to_parquet(tmp_path / "truth.parquet")
    return path


def test_profile_of_a_predictions_file_against_the_truth(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(profile_scoring, "MIN_BOARD_PINS", 1)
    monkeypatch.setattr(profile_scoring, "MIN_USER_PINS", 1)
    record = profile(_predictions(tmp_path), truth=tmp_path / "truth.parquet", board_rule="mean-log", user_rule="mean")
    boards = pd.read_parquet(tmp_path / "boards.parquet")
    assert boards[["board", "given_category", "predicted_category", "true_category", "n_pins"]].values.tolist() == [
        ["A", "x", "y", "x", 3], ["B", "y", "y", "y", 2], ["C", "x", "x", "x", 1]]
    users = pd.read_parquet(tmp_path / "users.parquet").set_index(["user", "category"])["share"]
    assert users[("u1", "x")] == pytest.approx(0.322) and users[("u2", "y")] == pytest.approx(0.1)
    truth = record["truth"]
    assert truth["boards"]["accuracy"] == pytest.approx(2 / 3)  # A is mostly x: mean-log is misled by its sure y pin
    assert truth["users"]["per_user"] == pytest.approx({"u1": 0.0047633, "u2": 0.0518992}, abs=1e-6)
    curve = {point["pins"]: point for point in truth["boards"]["curve"]}
    assert curve[1]["boards"] == 3 and curve[3]["boards"] == 1 and curve[3]["accuracy"] == 0.0
    auto = profile(tmp_path / "predictions.parquet", user_rule="mean")
    assert auto["board_rule"] == "vote" and auto["board_rule_agreement"]["vote"] == 1.0


def test_profile_refuses_what_it_cannot_use(tmp_path: Path):
    with pytest.raises(PintopicError, match="--label-issues"):
        profile(tmp_path)  # a folder without pin probabilities
    pd.DataFrame({"image_id": ["a"], "top1": ["x"], "score1": [1.0]}).to_parquet(tmp_path / "flat.parquet")
    with pytest.raises(PintopicError, match="users and boards"):
        profile(tmp_path / "flat.parquet")
    done = subprocess.run([sys.executable, "-m", "pintopic", "profile", str(tmp_path / "flat.parquet")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and done.stderr.startswith("pintopic: error:")


def test_board_aware_profiles_on_a_synthetic_crawl(tmp_path: Path):
    """Pins' out-of-fold probabilities on a crawl with off-theme pins and wrongly filed boards: boards named from their
    pins are right, and profiles from the board-aware posteriors are far closer to the truth than from the pins' own."""
    from test_classify_noise import synthetic_crawl

    from pintopic.classify.oof import fit_basis, out_of_fold, project
    from pintopic.dataset.split import cv_folds

    X, given, true, boards, users = synthetic_crawl(seed=1)
    probs = out_of_fold(project(fit_basis(X), X), given, cv_folds(given, boards, n_splits=4), np.arange(4), n_jobs=1)
    names = np.array(["a", "b", "c", "d"])
    pins = [f"p{i}" for i in range(len(given))]
    table = pd.DataFrame({"image_id": pins, "user": users, "board": [b.split("/")[1] for b in boards], "pin": pins,
                          "given": names[given], **{f"p:{name}": probs[:, k] for k, name in enumerate(names)}})
    table.to_parquet(tmp_path / "predictions.parquet")
    table[["user", "board", "pin"]].assign(category=names[true]).to_parquet(tmp_path / "truth.parquet")
    counts, board_aware, own = (profile(tmp_path / "predictions.parquet", truth=tmp_path / "truth.parquet", user_rule=rule)["truth"]
                                for rule in ("counts", "board", "mean"))
    by_rule = counts["users_by_rule"]  # every rule scored in one run, the chosen one in full
    assert set(by_rule) == {"filed", "counts", "board", "mean"} and "per_user" in counts["users"]
    assert by_rule["mean"] == {k: v for k, v in own["users"].items() if k != "per_user"}
    assert by_rule["filed"]["mean_js_divergence"] < 0.05
    assert board_aware["boards"]["evaluated"] == 32 and board_aware["boards"]["accuracy"] >= 0.9
    assert board_aware["boards"]["given_label_accuracy"] < 0.95  # 3 boards filed wrongly
    assert board_aware["users"]["evaluated"] == 8
    assert board_aware["users"]["mean_js_divergence"] < 0.05 < own["users"]["mean_js_divergence"]
    assert counts["users"]["mean_js_divergence"] < 0.05
    # the board curve reads the pins' own probabilities, whatever the user rule averages
    assert counts["boards"]["curve"] == board_aware["boards"]["curve"] == own["boards"]["curve"]


def test_counts_profile_counts_each_pin_once_for_its_most_likely_category(tmp_path: Path):
    """``counts``: a user's shares are whole pins (classify and count); the mean of the same posteriors is not."""
    rows = [("u1", "A", 0.97), ("u1", "A", 0.96), ("u1", "A", 0.98), ("u1", "A", 0.01),
            ("u1", "B", 0.02), ("u1", "B", 0.03), ("u2", "C", 0.95), ("u2", "C", 0.9)]
    table = pd.DataFrame({"image_id": [f"p{i}" for i in range(len(rows))], "user": [r[0] for r in rows],
                          "board": [r[1] for r in rows], "pin": [f"p{i}" for i in range(len(rows))],
                          "p:x": [r[2] for r in rows], "p:y": [1 - r[2] for r in rows]})
    table.to_parquet(tmp_path / "predictions.parquet")
    shares = {}
    for rule in ("counts", "board"):
        profile(tmp_path / "predictions.parquet", user_rule=rule)
        shares[rule] = pd.read_parquet(tmp_path / "users.parquet").set_index(["user", "category"])["share"]
    assert shares["counts"].to_dict() == {("u1", "x"): 0.5, ("u1", "y"): 0.5, ("u2", "x"): 1.0, ("u2", "y"): 0.0}
    assert 0 < shares["board"][("u2", "y")] < 0.1 and shares["board"][("u1", "x")] != 0.5
    with pytest.raises(PintopicError, match="unknown user rule"):
        profile(tmp_path / "predictions.parquet", user_rule="votes")


def test_filed_profile_believes_a_boards_filed_category_where_its_pins_hesitate(tmp_path: Path):
    """``filed``: board A's pins lean y, but it is filed under x and every board's pins agree with its filing, so its
    pins count as x; with A's filing unknown (or no filing at all) the rule reads the pins alone, as ``counts``."""
    rows = [("u1", "A", "x", 0.3), ("u1", "A", "x", 0.25), ("u1", "A", "x", 0.35), ("u1", "B", "y", 0.1),
            ("u1", "B", "y", 0.15), ("u1", "B", "y", 0.05), ("u2", "C", "x", 0.9), ("u2", "C", "x", 0.85),
            ("u2", "C", "x", 0.95), ("u2", "D", "y", 0.1), ("u2", "D", "y", 0.2), ("u2", "D", "y", 0.1)]
    table = pd.DataFrame({"image_id": [f"p{i}" for i in range(len(rows))], "user": [r[0] for r in rows],
                          "board": [r[1] for r in rows], "pin": [f"p{i}" for i in range(len(rows))],
                          "given": [r[2] for r in rows], "p:x": [r[3] for r in rows], "p:y": [1 - r[3] for r in rows]})

    def u1_x_share(frame, rule):
        frame.to_parquet(tmp_path / "predictions.parquet")
        record = profile(tmp_path / "predictions.parquet", user_rule=rule)
        return record, pd.read_parquet(tmp_path / "users.parquet").set_index(["user", "category"])["share"][("u1", "x")]

    record, filed = u1_x_share(table, "filed")
    assert filed == 0.5 and record["given_known"] == 1.0 and u1_x_share(table, "counts")[1] == 0.0
    assert record["board_rule"] in ("mean-log", "mean", "vote", "mixture")
    boards = pd.read_parquet(tmp_path / "boards.parquet").set_index("board")["predicted_category"]
    assert boards["A"] == "y"  # a board's own category never reads its filing
    unknown_a = table.assign(given=table["given"].where(table["board"] != "A"))
    record, share = u1_x_share(unknown_a, "filed")
    assert share == 0.0 and record["given_known"] == 0.75
    assert u1_x_share(table.drop(columns="given"), "filed")[1] == 0.0


def test_board_curve_names_many_draws_at_once_as_it_names_each_alone():
    """The curve scores all its draws of n pins in a few calls; one call per draw gives the same accuracies."""
    from pintopic.predict.profile_scoring import board_accuracy_curve

    rng = np.random.default_rng(0)
    board_index = np.repeat(np.arange(12), rng.integers(3, 15, 12))
    themes = rng.integers(0, 4, 12)
    probs = rng.dirichlet(np.ones(4), len(board_index)) + 0.6 * np.eye(4)[themes[board_index]]
    probs /= probs.sum(axis=1, keepdims=True)
    users = np.array([f"u{b % 3}" for b in board_index])
    for rule in ("mean-log", "mean", "vote", "mixture"):
        curves = [board_accuracy_curve(probs, board_index, np.array(list("abcd"))[themes], np.ones(12, bool), rule,
                                       list("abcd"), pin_counts=(1, 3, 5), repeats=4, seed=1, users=users,
                                       rows_per_call=per_call) for per_call in (1, 100_000)]
        assert curves[0] == curves[1]
        assert all(0 < point["accuracy"] <= 1 for point in curves[0])
