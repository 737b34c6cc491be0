"""``pintopic evaluate RUN --label-issues``: flag suspect pins, train through the noise, keep honest pin probabilities.

Runs on one feature store (the first the evaluate stage uses) after the study's table, and writes:

- ``results/label_issues.parquet``: the flagged pins of the whole sample, worst first (``image_id``, ``user``,
  ``board``, ``pin``, ``given``, ``suggested``, ``score``, ``reason``), from out-of-fold probabilities with
  folds grouped by board (:mod:`pintopic.classify.label_issues`);
- ``results/noise.json``: the training-through-the-noise options with their CV scores on the training part,
  the chosen one, and test scores on the given labels (the test part is never cleaned or relabelled) and,
  with a truth file, on the true labels too, for these options and for every pair of the table;
- ``results/pin_probabilities.parquet``: every sampled pin's class probabilities from a model that never
  saw its board (training pins: the chosen option's out-of-fold probabilities; test pins: the chosen model
  fitted on the training part, which with ``--split group:board`` never saw their boards), which
  ``pintopic profile`` aggregates into boards and users.

A rerun with the same inputs and settings does nothing. The truth file is read only to score, and only
when its path is given.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

#: Bumped when a change here changes the outputs, so they are recomputed.
NOISE_VERSION = 1
PROBABILITY_PREFIX = "p:"


def _pins(run_dir, ids):
    """The sampled rows of ``ids`` (in that order) with their board key (``user/board``, or the image id in a
    folders dataset, where every pin is its own board)."""
    from pintopic.dataset.manifest import load_sample
    from pintopic.dataset.split import board_keys

    sample = load_sample(run_dir)
    sample["image_id"] = sample["image_id"].astype(str)
    pins = sample.set_index("image_id").loc[list(ids)].reset_index()
    has_boards = pins["board"].notna().all() and (pins["board"].astype(str) != "").all()
    pins["board_key"] = board_keys(pins["user"], pins["board"]) if has_boards else pins["image_id"].to_numpy()
    return pins, bool(has_boards)


def _settings(store, protocol, method: str, truth) -> dict:
    from pintopic.features.store import ids_checksum

    truth_stat = None
    if truth:
        stat = Path(truth).stat()
        truth_stat = [str(Path(truth).resolve()), stat.st_size, stat.st_mtime_ns]
    return {"version": NOISE_VERSION, "key": store.folder.name, "ids_sha256": ids_checksum(store.used),
            "split": protocol.split_hash, "cv": protocol.cv, "seed": protocol.seed, "method": method, "truth": truth_stat}


def noise_stage(run_dir, store, protocol, *, method: str | None = None, truth=None) -> dict:
    """Flags, noise-aware training and pin probabilities for ``store`` (an evaluate ``_StoreRows``-like object
    with ``folder``, ``meta``, ``used``); returns noise.json's content."""
    from pintopic.classify.label_issues import DEFAULT_METHOD
    from pintopic.runio import read_json, settings_hash, stage_is_complete, write_json

    method = method or DEFAULT_METHOD
    results_dir = protocol.results_dir
    settings = _settings(store, protocol, method, truth)
    marker = results_dir / "noise.json"
    outputs = [results_dir / name for name in ("label_issues.parquet", "pin_probabilities.parquet")]
    if stage_is_complete(marker, settings) and all(path.exists() for path in outputs):
        return read_json(marker)
    record = _compute(run_dir, store, protocol, method, truth)
    record.update(settings=settings, settings_hash=settings_hash(settings))
    write_json(marker, record)
    return record


def _compute(run_dir, store, protocol, method: str, truth) -> dict:
    from pintopic.classify.noise_aware import choose_option, fit_option
    from pintopic.classify.oof import (
        assemble,
        grouped_out_of_fold,
        probabilities,
        project,
    )
    from pintopic.dataset.split import cv_folds
    from pintopic.features.fusion import load_store

    ids, X = load_store(store.folder, store.meta, ids=store.used)
    pins, has_boards = _pins(run_dir, ids)
    classes = np.asarray(protocol.categories)
    given = np.searchsorted(classes, pins["category"].astype(str).to_numpy())
    keys, users = pins["board_key"].to_numpy(), pins["user"].astype(str).to_numpy()
    P, _ = grouped_out_of_fold(X, given, keys, np.arange(len(classes)), n_splits=protocol.cv, seed=protocol.seed,
                               n_jobs=protocol.n_jobs)
    issues = _write_issues(protocol.results_dir, pins, classes, given, P, keys, users if has_boards else None, method)
    train = np.array([protocol.part_of[i] == "train" for i in ids])
    folds = cv_folds(given[train], keys[train], n_splits=protocol.cv, seed=protocol.seed)
    chosen = choose_option(X[train], given[train], keys[train], users[train] if has_boards else None, folds,
                           np.arange(len(classes)), method=method, seed=protocol.seed, n_jobs=protocol.n_jobs)
    Z_train = project(chosen["basis"], X[train])
    baseline = assemble(chosen["basis"], fit_option("none", Z_train, given[train], chosen["issues"], chosen["pred_probs"],
                                                    seed=protocol.seed))
    test_probs = probabilities(chosen["model"], X[~train], np.arange(len(classes)))
    _write_probabilities(protocol.results_dir, pins, classes, train, chosen["oof"], test_probs)
    predictions = {"none": baseline.predict(X[~train]), chosen["chosen"]: test_probs.argmax(axis=1)}
    true = _true_index(pins, classes, truth)
    record = {
        "store": store.folder.name, "method": method, "boards": has_boards, "categories": classes.tolist(),
        "flags": _flag_summary(issues, given, true),
        "options": {"cv_f1_macro": chosen["cv"], "cv_folds": chosen["cv_folds"], "chosen": chosen["chosen"],
                    "test": {name: _scores(given[~train], pred, None if true is None else true[~train])
                             for name, pred in predictions.items()}},
        "n_train": int(train.sum()), "n_test": int((~train).sum()),
    }
    if truth:
        record["pairs_on_true_labels"] = _pairs_on_true_labels(protocol.results_dir, pins, truth)
    return record


def _true_index(pins, classes, truth):
    """Class index of each pin's true category (-1 for a category outside ``classes``), or None without truth."""
    if not truth:
        return None
    from pintopic.dataset.truth import read_truth, true_categories

    names = np.asarray(true_categories(pins, read_truth(truth)))
    index = np.searchsorted(classes, names).clip(0, len(classes) - 1)
    return np.where(classes[index] == names, index, -1)


def _scores(given, predicted, true) -> dict:
    from pintopic.classify.metrics import f1_macro

    scores = {"given": {"f1_macro": f1_macro(given, predicted), "accuracy": float(np.mean(given == predicted))}}
    if true is not None:
        scores["true"] = {"f1_macro": f1_macro(true, predicted), "accuracy": float(np.mean(true == predicted))}
    return scores


def _write_issues(results_dir, pins, classes, given, P, keys, users, method):
    from pintopic.classify.label_issues import flag_label_issues
    from pintopic.runio import write_parquet

    issues = flag_label_issues(P, given, keys, users, method=method)
    table = pins[["image_id", "user", "board", "pin"]].assign(
        given=classes[given], suggested=classes[issues["suggested"].to_numpy()], score=issues["score"].to_numpy(),
        reason=issues["reason"].to_numpy())
    flagged = table[issues["flagged"].to_numpy()].sort_values(["score", "image_id"], ascending=[False, True])
    write_parquet(results_dir / "label_issues.parquet", flagged.reset_index(drop=True))
    return issues


def _flag_summary(issues, given, true) -> dict:
    from pintopic.classify.label_issues import METHODS, flag_quality

    summary = {"n_pins": len(issues), "flagged": int(issues["flagged"].sum()),
               "by_reason": {str(k): int(v) for k, v in issues.loc[issues["flagged"], "reason"].value_counts().items()},
               "estimated_off_theme": issues.attrs.get("off_theme"), "estimated_wrong_boards": issues.attrs.get("wrong_boards")}
    if true is not None:
        summary["against_truth"] = {name: flag_quality(issues[f"flag_{name}"], given != true) for name in METHODS}
    return summary


def _write_probabilities(results_dir, pins, classes, train, oof, test_probs) -> None:
    from pintopic.runio import write_parquet

    probs = np.zeros((len(pins), len(classes)))
    probs[train], probs[~train] = oof, test_probs
    table = pins[["image_id", "user", "board", "pin"]].assign(given=pins["category"].astype(str),
                                                              part=np.where(train, "train", "test"))
    for column, name in enumerate(classes):
        table[PROBABILITY_PREFIX + str(name)] = probs[:, column]
    write_parquet(results_dir / "pin_probabilities.parquet", table)


def _pairs_on_true_labels(results_dir, pins, truth) -> dict:
    """Test macro-F1 and accuracy on the true labels of every pair's recorded test predictions."""
    import pandas as pd

    from pintopic.classify.metrics import f1_macro
    from pintopic.dataset.truth import read_truth, true_categories
    from pintopic.safeio import open_regular

    true_of = dict(zip(pins["image_id"], true_categories(pins, read_truth(truth))))
    scores = {}
    for path in sorted((results_dir / "predictions").glob("*.parquet")):
        with open_regular(path) as handle:  # a pipe planted there must not block
            frame = pd.read_parquet(handle, columns=["image_id", "pred"])
        frame = frame[frame["image_id"].astype(str).isin(true_of)]
        true = [true_of[i] for i in frame["image_id"].astype(str)]
        scores[path.stem] = {"f1_macro": f1_macro(true, frame["pred"].astype(str)),
                             "accuracy": float(np.mean(np.asarray(true) == frame["pred"].astype(str).to_numpy()))}
    return scores
