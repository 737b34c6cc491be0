"""The train/test split shared by every backbone x classifier, and the folds of the inner cross-validation.

``stratified``: a seeded stratified split (the study: 800/200 per category). ``group:user`` and
``group:board`` keep every image of a user (board, named within its user) on one side, via StratifiedGroupKFold, and group the
inner folds the same way, the leak-free evaluation the study did not do.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pintopic.errors import PintopicError
from pintopic.safeio import open_regular

SPLIT_MODES = ("stratified", "group:user", "group:board")


def split_groups(sample, split: str):
    """The group label of each sample row for a group split (None for ``stratified``)."""
    if split not in SPLIT_MODES:
        raise PintopicError(f"unknown split {split!r}; choose from {', '.join(SPLIT_MODES)}")
    if split == "stratified":
        return None
    column = split.split(":", 1)[1]
    if column not in sample.columns or sample[column].isna().any() or (sample[column].astype(str) == "").any():
        raise PintopicError(
            f"--split {split} needs a {column} for every image, but this dataset has none (a folders layout?); "
            "use --split stratified or ingest a crawl")
    if column == "board" and "user" in sample.columns:  # boards are named within a user
        return board_keys(sample["user"], sample["board"])
    return sample[column].astype(str).to_numpy()


def board_keys(users, boards) -> np.ndarray:
    """One key per pin naming its board, ``user/board``: two users' "recipes" boards are different boards."""
    users = ["" if u is None else str(u) for u in users]
    return np.array([f"{u}/{b}" for u, b in zip(users, map(str, boards))], dtype=object)


def make_split(sample, *, test_size: float = 0.2, split: str = "stratified", seed: int = 0):
    """A DataFrame ``image_id`` -> ``part`` ("train"/"test"), in ``image_id`` order, deterministic for a seed."""
    import pandas as pd
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    if not 0 < test_size < 1:
        raise PintopicError(f"test size must be between 0 and 1, got {test_size}")
    sample = sample.sort_values("image_id", kind="stable").reset_index(drop=True)
    labels = sample["category"].to_numpy()
    counts = pd.Series(labels).value_counts()
    if len(counts) < 2 or counts.min() < 2:
        raise PintopicError("every category needs at least 2 sampled images to be split into train and test")
    groups = split_groups(sample, split)
    positions = np.arange(len(sample))
    if groups is None:
        _, test_positions = train_test_split(positions, test_size=test_size, stratify=labels, random_state=seed)
    else:
        n_splits = max(2, int(round(1 / test_size)))
        if len(np.unique(groups)) < n_splits:
            raise PintopicError(f"--split {split} needs at least {n_splits} distinct {split[6:]}s, found {len(np.unique(groups))}")
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        _, test_positions = next(folds.split(positions, labels, groups))
    part = np.full(len(sample), "train", dtype=object)
    part[test_positions] = "test"
    return pd.DataFrame({"image_id": sample["image_id"].astype(str).to_numpy(), "part": part})


def split_settings(sample, *, test_size: float, split: str, seed: int) -> dict:
    """What the split depends on: its settings and the exact sample (ids with their labels and groups)."""
    import hashlib

    groups = split_groups(sample, split)
    digest = hashlib.sha256()
    columns = [sample["image_id"], sample["category"]] + ([groups] if groups is not None else [])
    for values in sorted(zip(*(map(str, column) for column in columns))):
        digest.update(("\t".join(values) + "\n").encode())
    return {"test_size": float(test_size), "split": split, "seed": int(seed), "sample_sha256": digest.hexdigest()}


def load_or_make_split(results_dir: str | Path, sample, *, test_size: float, split: str, seed: int):
    """``RUN/results/split.parquet`` (+ split.json), rebuilt only when the split settings or the sample change."""
    import pandas as pd

    from pintopic.runio import (
        settings_hash,
        stage_is_complete,
        write_json,
        write_parquet,
    )

    results_dir = Path(results_dir)
    settings = split_settings(sample, test_size=test_size, split=split, seed=seed)
    marker, table = results_dir / "split.json", results_dir / "split.parquet"
    if table.exists() and stage_is_complete(marker, settings):
        try:
            with open_regular(table) as handle:
                return pd.read_parquet(handle), settings
        except Exception:  # noqa: BLE001 - a damaged split is made again
            pass
    frame = make_split(sample, test_size=test_size, split=split, seed=seed)
    write_parquet(table, frame)
    counts = frame["part"].value_counts().to_dict()
    write_json(marker, {**settings, "n_train": int(counts.get("train", 0)), "n_test": int(counts.get("test", 0)),
                        "settings_hash": settings_hash(settings)})
    return frame, settings


def cv_folds(y, groups=None, *, n_splits: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner cross-validation folds on the training rows: stratified, grouped when ``groups`` is given."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y)
    smallest = int(np.unique(y, return_counts=True)[1].min())
    if smallest < n_splits:
        raise PintopicError(
            f"{n_splits}-fold cross-validation needs at least {n_splits} training images per category; "
            f"the smallest category has {smallest} (sample more images or lower --cv)")
    if groups is None:
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return [(train, val) for train, val in splitter.split(np.zeros(len(y)), y)]
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [(train, val) for train, val in splitter.split(np.zeros(len(y)), y, groups)]


def recorded_split(results_dir: str | Path, sample):
    """``(frame, settings)`` of the split already made for this exact sample (``results/split.*``), or None."""
    import pandas as pd

    from pintopic.runio import read_json, stage_is_complete

    results_dir = Path(results_dir)
    try:
        recorded = read_json(results_dir / "split.json")
        settings = split_settings(sample, test_size=recorded["test_size"], split=recorded["split"], seed=recorded["seed"])
    except (OSError, ValueError, KeyError, TypeError, PintopicError):
        return None
    if not stage_is_complete(results_dir / "split.json", settings) or not (results_dir / "split.parquet").exists():
        return None  # another sample (or a damaged record): not this sample's split
    with open_regular(results_dir / "split.parquet") as handle:
        return pd.read_parquet(handle), settings


def training_split(results_dir: str | Path, sample, *, test_size: float | None = None, split: str | None = None,
                   seed: int = 0):
    """The split a training step (a fine-tune) must respect: the run's own when one exists for this sample,
    else a new one (default stratified, 0.2). Asking for other settings than the run's split is an error,
    since training on the run's test images would make every later score on them meaningless."""
    found = recorded_split(results_dir, sample)
    if found is None:
        return load_or_make_split(results_dir, sample, test_size=0.2 if test_size is None else test_size,
                                  split=split or "stratified", seed=seed)
    frame, settings = found
    asked = {"test_size": None if test_size is None else float(test_size), "split": split}
    differs = [f"{key} {value}" for key, value in asked.items() if value is not None and value != settings[key]]
    if differs:
        raise PintopicError(
            f"this run's split is {settings['split']} (test size {settings['test_size']}, seed {settings['seed']}); "
            f"training with {', '.join(differs)} could train on its test images. Leave --split/--test-size out to "
            "use the run's split, or use a new run folder")
    return frame, settings
