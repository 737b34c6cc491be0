"""Noisy make-crawl (issue 21): exact, seeded noise; the truth file beside the crawl never reaches the dataset stage."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import COLOURS

from pintopic.dataset import ingest, load_manifest, make_crawl
from pintopic.dataset.boardplan import off_theme_count
from pintopic.dataset.split import board_keys, cv_folds, split_groups
from pintopic.errors import PintopicError


def _noisy(colour_folders: Path, out: Path, seed: int = 3) -> dict:
    return make_crawl(colour_folders, out, users=5, seed=seed, off_theme=0.3, wrong_boards=0.25, board_size=(10, 16))


def test_noise_is_exact_and_seeded(colour_folders: Path, tmp_path: Path):
    summary = _noisy(colour_folders, tmp_path / "crawl")
    truth = pd.read_parquet(tmp_path / "crawl" / "truth.parquet")
    assert len(truth) == summary["pins"] and summary["pins"] + summary["unused"] == 4 * 45
    boards = truth.groupby(["user", "board"])
    assert len(boards) == summary["boards"] >= 8
    n_wrong = 0
    for (user, slug), pins in boards:
        listed = {b["slug"]: b["category"] for b in json.loads((tmp_path / "crawl" / user / "boards.json").read_text())}
        assert (pins["listed_category"] == listed[slug]).all()
        assert 10 <= len(pins) <= 16
        assert pins["off_theme"].sum() == off_theme_count(len(pins), 0.3)  # exactly round(0.3 n) per board
        theme = pins.loc[~pins["off_theme"], "category"]
        assert theme.nunique() == 1  # on-theme pins share the board's theme ...
        assert not pins.loc[pins["off_theme"], "category"].isin(theme).any()  # ... off-theme ones come from others
        wrong = bool(pins["wrong_board"].iloc[0])
        assert wrong == (listed[slug] != theme.iloc[0])
        n_wrong += wrong
    assert n_wrong == summary["wrong_boards"] == round(0.25 * summary["boards"])
    assert summary["off_theme_pins"] == int(truth["off_theme"].sum())
    # every pin folder has its truth row, and its pin.json says nothing about its source
    pin_dirs = {(p.parts[-3], p.parts[-2], p.parts[-1]) for p in (tmp_path / "crawl").glob("*/*/*") if p.is_dir()}
    assert pin_dirs == set(zip(truth["user"], truth["board"], truth["pin"]))
    pin_json = json.loads(next((tmp_path / "crawl").glob("*/*/*/pin.json")).read_text())
    assert "source_path" not in pin_json and not any(c in pin_json["description"] for c in COLOURS)
    # seeded: the same seed gives the same crawl, another seed another one
    assert _noisy(colour_folders, tmp_path / "again") == {**summary, "truth": str(tmp_path / "again" / "truth.parquet")}
    assert pd.read_parquet(tmp_path / "again" / "truth.parquet").equals(truth)
    other = _noisy(colour_folders, tmp_path / "other", seed=4)
    assert not pd.read_parquet(tmp_path / "other" / "truth.parquet")[["board", "category"]].equals(truth[["board", "category"]]) \
        or other != summary


def test_truth_file_does_not_change_what_ingest_sees(colour_folders: Path, tmp_path: Path, read_audit):
    crawl = tmp_path / "crawl"
    _noisy(colour_folders, crawl)
    truth_path = crawl / "truth.parquet"
    opened = read_audit
    ingest(crawl, tmp_path / "with", workers=1, progress=False)
    assert opened and not [path for path in opened if Path(path).name == "truth.parquet"], "ingest read the truth file"
    pd.read_parquet(truth_path)  # the audit sees a read when there is one
    assert opened[-1] == str(truth_path)
    truth_path.rename(tmp_path / "truth.parquet")
    ingest(crawl, tmp_path / "without", workers=1, progress=False)
    columns = ["image_id", "path", "user", "board", "pin", "category", "status", "sha256"]
    assert load_manifest(tmp_path / "with")[columns].equals(load_manifest(tmp_path / "without")[columns])
    manifest = load_manifest(tmp_path / "with")
    assert "truth.parquet" not in " ".join(manifest["path"])
    truth = pd.read_parquet(tmp_path / "truth.parquet")
    merged = manifest.merge(truth, on=["user", "board", "pin"], suffixes=("", "_true"))
    assert len(merged) == len(manifest)  # pins are matched by the crawl's names
    assert (merged["category"] == merged["listed_category"]).all()  # the manifest holds the given (board) labels


def test_grouped_folds_never_split_a_board():
    rng = np.random.default_rng(0)
    users = [f"u{i % 7}" for i in range(400)]
    slugs = [f"b{rng.integers(6)}" for _ in range(400)]  # the same slugs recur across users
    keys = board_keys(users, slugs)
    labels = np.array([hash(k) % 3 for k in keys])
    for train, val in cv_folds(labels, keys, n_splits=5, seed=1):
        assert not set(keys[train]) & set(keys[val])
    sample = pd.DataFrame({"user": users, "board": slugs, "category": labels})
    groups = split_groups(sample, "group:board")
    assert len(set(groups)) == len(set(zip(users, slugs))) > len(set(slugs))  # boards are named within their user


def test_bad_noise_settings_are_clear_errors(colour_folders: Path, tmp_path: Path):
    with pytest.raises(PintopicError, match="off-theme"):
        make_crawl(colour_folders, tmp_path / "a", off_theme=1.2)
    with pytest.raises(PintopicError, match="board-size"):
        make_crawl(colour_folders, tmp_path / "b", off_theme=0.1, board_size=(20, 10))
    done = subprocess.run([sys.executable, "-m", "pintopic", "make-crawl", str(colour_folders), str(tmp_path / "c"),
                           "--off-theme", "0.2", "--wrong-boards", "0.1", "--board-size", "10-15", "--users", "3"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "off-theme pins" in done.stdout and (tmp_path / "c" / "truth.parquet").exists()
    bad = subprocess.run([sys.executable, "-m", "pintopic", "make-crawl", str(colour_folders), str(tmp_path / "d"),
                          "--board-size", "ten"], capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2 and "MIN-MAX" in bad.stderr
