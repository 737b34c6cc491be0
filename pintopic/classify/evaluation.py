"""The classify stage: the study's protocol (split, grid-searched classifiers, macro-F1) -> ``RUN/results/``.

The split is made once on the whole sample and shared by every backbone. A store that lacks some sampled
ids (images whose extraction failed) drops exactly those ids for that backbone, with a warning; the row
records how many (``n_dropped``), so backbones stay comparable on the same split. A backbone x classifier
pair whose inputs (store ids, split, grid, seed, cv, metric) match its record in ``results/rows/`` is not
recomputed, and its features are not even loaded, so a rerun with nothing changed is a no-op.
"""
from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pintopic.errors import AlignmentError, PintopicError

#: Store meta.json fields a model keeps so predict can re-extract features the same way.
BACKBONE_FIELDS_DROPPED = ("failed", "ids_sha256", "n_rows", "shard_rows", "settings_hash",
                           "seconds", "images_per_second", "images_computed", "images_reused",
                           "engine")  # timings and where they ran: not the model
#: Bumped when a change here changes results, so recorded rows are recomputed.
PROTOCOL_VERSION = 1
KNN_METRICS = ("euclidean", "cosine")


class BelowChanceWarning(UserWarning):
    """A classifier scored a test macro-F1 below chance: something upstream is probably broken."""


def warn_if_below_chance(f1_macro: float, n_categories: int, what: str) -> bool:
    """Print a loud warning naming the likely causes when ``f1_macro`` < 1/K; True when it fired."""
    chance = 1.0 / n_categories
    if f1_macro >= chance:
        return False
    message = (
        f"\n{'!' * 78}\nWARNING: {what} scored test macro-F1 {f1_macro:.3f}, BELOW CHANCE ({chance:.3f} = 1/{n_categories}).\n"
        "Likely causes: labels misaligned with features (joined by position instead of image_id), wrong\n"
        "preprocessing or weights for the backbone (e.g. pretrained=False), or a classifier that collapsed\n"
        f"to one class (e.g. the NN failing to train). Do not report this number before checking.\n{'!' * 78}")
    print(message, file=sys.stderr)
    warnings.warn(f"{what}: test macro-F1 {f1_macro:.3f} below chance {chance:.3f}", BelowChanceWarning, stacklevel=2)
    return True


def pair_name(key: str, classifier: str) -> str:
    """The file stem of a backbone x classifier's outputs: ``rows/``, ``confusion/``, ``predictions/``, ``models/``."""
    return f"{key}__{classifier}"


@dataclass
class Protocol:
    """What every pair of a run shares: the split, the labels, the groups and the search settings."""

    results_dir: Path
    split_frame: object
    split_info: dict
    split_hash: str
    part_of: dict
    label_of: dict
    group_of: dict | None
    categories: list
    cv: int
    seed: int
    metric: str
    n_jobs: int
    grids: dict

    def folds(self, train_ids, y_train):
        """The inner CV folds of these training rows, grouped like the split (users or boards never straddle)."""
        from pintopic.dataset.split import cv_folds

        groups = np.array([self.group_of[i] for i in train_ids]) if self.group_of is not None else None
        return cv_folds(y_train, groups, n_splits=self.cv, seed=self.seed)


def _protocol(run_dir, results_dir: Path, *, classifiers, grids, cv, test_size, split, seed, metric, n_jobs) -> Protocol:
    from pintopic.classify.catalog import resolve_grids
    from pintopic.dataset.manifest import load_sample
    from pintopic.dataset.split import load_or_make_split, split_groups
    from pintopic.runio import settings_hash

    resolved = resolve_grids(classifiers, grids)
    sample = load_sample(run_dir)
    sample["image_id"] = sample["image_id"].astype(str)
    sample["category"] = sample["category"].astype(str)
    counts = sample["category"].value_counts()
    dropped = {c: f"{n} image{'s' if n != 1 else ''}, too few to split" for c, n in counts.items() if n < 2}
    sample = sample[~sample["category"].isin(list(dropped))]
    split_frame, split_info = load_or_make_split(results_dir, sample, test_size=test_size, split=split, seed=seed)
    sample, split_frame, too_small = _drop_small_categories(sample, split_frame, cv)
    dropped.update(too_small)
    for category, why in sorted(dropped.items()):
        print(f"warning: category {category!r} has {why} for {cv}-fold cross-validation on the training part: "
              "left out of the evaluation (sample more images or lower --cv)", file=sys.stderr)
    if sample["category"].nunique() < 2:
        raise PintopicError(f"fewer than 2 categories have enough images for a train/test split and {cv}-fold "
                            f"cross-validation (left out: {', '.join(sorted(dropped)) or 'none'}); sample more images or lower --cv")
    part_of = dict(zip(split_frame["image_id"], split_frame["part"]))
    if set(part_of) != set(sample["image_id"]):
        raise AlignmentError("results/split.parquet does not cover exactly the sample's image ids")
    groups = split_groups(sample, split)
    return Protocol(results_dir, split_frame, {**split_info, "dropped_categories": dict(sorted(dropped.items()))},
                    settings_hash(split_info), part_of, dict(zip(sample["image_id"], sample["category"])),
                    dict(zip(sample["image_id"], groups)) if groups is not None else None,
                    sorted(sample["category"].unique()), cv, seed, metric, n_jobs, resolved)


def _drop_small_categories(sample, split_frame, cv: int):
    """The sample and split without the categories whose training part is smaller than ``cv`` (their reason)."""
    train = set(split_frame.loc[split_frame["part"] == "train", "image_id"])
    counts = sample.loc[sample["image_id"].isin(train), "category"].value_counts()
    small = {c: f"{int(counts.get(c, 0))} training image{'s' if counts.get(c, 0) != 1 else ''}, too few"
             for c in sample["category"].unique() if counts.get(c, 0) < cv}
    if not small:
        return sample, split_frame, {}
    kept = sample[~sample["category"].isin(list(small))]
    return kept, split_frame[split_frame["image_id"].isin(set(kept["image_id"]))].reset_index(drop=True), small


class _StoreRows:
    """One store's rows of the split, its features loaded only when some pair has to be fitted."""

    def __init__(self, folder: Path, meta: dict, protocol: Protocol):
        from pintopic.features.fusion import store_ids_of

        self.folder, self.meta, self.protocol = folder, meta, protocol
        present = set(store_ids_of(folder, meta))
        self.used = [image_id for image_id in protocol.split_frame["image_id"] if image_id in present]
        self.n_dropped = len(protocol.part_of) - len(self.used)
        if not self.used:
            raise AlignmentError(f"feature store {folder.name} holds none of the sampled image ids; it was extracted "
                                 "from another sample; rerun `pintopic extract`")
        if self.n_dropped:
            warnings.warn(f"{folder.name}: {self.n_dropped} sampled images have no features (extraction failed); "
                          "they are left out for this backbone", stacklevel=3)
        self._loaded = None

    def parts(self):
        """``(X_train, y_train, X_test, y_test, train_ids, test_ids, folds)`` in split order."""
        if self._loaded is None:
            from pintopic.features.fusion import load_store

            ids, X = load_store(self.folder, self.meta, ids=self.used)
            is_train = np.array([self.protocol.part_of[i] == "train" for i in ids])
            y = np.array([self.protocol.label_of[i] for i in ids])
            folds = self.protocol.folds(ids[is_train], y[is_train])
            self._loaded = (X[is_train], y[is_train], X[~is_train], y[~is_train], ids[is_train], ids[~is_train], folds)
        return self._loaded


def _pair_settings(store: _StoreRows, classifier: str) -> dict:
    from pintopic.features.store import ids_checksum

    protocol = store.protocol
    return {
        "protocol": PROTOCOL_VERSION, "key": store.folder.name, "classifier": classifier,
        "grid": protocol.grids[classifier], "ids_sha256": ids_checksum(store.used),
        "store_ids_sha256": store.meta.get("ids_sha256"), "split": protocol.split_hash, "seed": protocol.seed,
        "cv": protocol.cv, "metric": protocol.metric if classifier == "knn" else None,
    }


def search_and_score(classifier: str, X_train, y_train, X_test, y_test, folds, grid: dict, categories, *,
                     metric: str = "euclidean", seed: int = 0, n_jobs: int = 2, backbone: dict | None = None) -> dict:
    """The protocol for one backbone x classifier: grid search by CV on the training rows, refit, score the test rows.

    Returns ``model``, ``search`` (best_params, cv_f1_macro, cv_results), ``summary`` (test metrics and confusion),
    ``scores`` and their ``kind`` per test row, and ``fit_seconds``. The test labels only score the refitted model.
    """
    from pintopic.classify.estimators import class_scores
    from pintopic.classify.metrics import classification_summary
    from pintopic.classify.search import grid_search

    started = time.perf_counter()
    search = grid_search(classifier, X_train, y_train, grid, folds, metric=metric, seed=seed, n_jobs=n_jobs,
                         backbone=backbone)
    fit_seconds = time.perf_counter() - started
    model = search.pop("model")
    scores, kind = class_scores(model, X_test)
    return {"model": model, "search": search, "summary": classification_summary(y_test, model.predict(X_test), categories),
            "scores": scores, "kind": kind, "fit_seconds": fit_seconds}


def _fit_pair(classifier: str, store: _StoreRows, model_dir: Path) -> dict:
    """Search, refit, score on the test part; write the pair's confusion matrix, predictions and model; return its row."""
    from pintopic.classify.metrics import confusion_csv, top_predictions
    from pintopic.classify.persist import save_model
    from pintopic.runio import write_parquet, write_text

    protocol, meta = store.protocol, store.meta
    X_train, y_train, X_test, y_test, _, test_ids, folds = store.parts()
    done = search_and_score(classifier, X_train, y_train, X_test, y_test, folds, protocol.grids[classifier],
                            protocol.categories, metric=protocol.metric, seed=protocol.seed, n_jobs=protocol.n_jobs,
                            backbone=meta)
    model, search, summary, fit_seconds = done["model"], done["search"], done["summary"], done["fit_seconds"]
    scores, kind = done["scores"], done["kind"]
    name = model_dir.name
    write_text(protocol.results_dir / "confusion" / f"{name}.csv", confusion_csv(summary["confusion"], protocol.categories))
    write_parquet(protocol.results_dir / "predictions" / f"{name}.parquet",
                  top_predictions(scores, model.classes_, y_test, test_ids, kind))
    save_model(model, model_dir, {
        "classifier": classifier, "best_params": search["best_params"], "categories": [str(c) for c in model.classes_],
        "metric": protocol.metric, "backbone": {k: v for k, v in meta.items() if k not in BACKBONE_FIELDS_DROPPED},
        "feature_key": store.folder.name, "seed": protocol.seed, "test_f1_macro": summary["f1_macro"],
    })
    return {
        "backbone": str(meta.get("spec", store.folder.name)), "key": store.folder.name, "classifier": classifier,
        "best_params": search["best_params"], "cv_f1_macro": search["cv_f1_macro"], "cv_results": search["cv_results"],
        "test_f1_macro": summary["f1_macro"], "test_accuracy": summary["accuracy"], "fit_seconds": round(fit_seconds, 3),
        "n_train": len(y_train), "n_test": len(y_test), "n_dropped": store.n_dropped, "per_category": summary["per_category"],
    }


def _pair_row(classifier: str, store: _StoreRows) -> tuple[dict, dict, Path]:
    """The pair's row from its record when its settings match, else fitted now; ``(row, settings, model folder)``."""
    from pintopic.runio import read_json, settings_hash, stage_is_complete, write_json

    results_dir = store.protocol.results_dir
    settings = _pair_settings(store, classifier)
    name = pair_name(store.folder.name, classifier)
    record, model_dir = results_dir / "rows" / f"{name}.json", results_dir / "models" / name
    if stage_is_complete(record, settings) and (model_dir / "model.json").exists():
        return read_json(record)["row"], settings, model_dir
    row = _fit_pair(classifier, store, model_dir)
    write_json(record, {"row": row, "settings": settings, "settings_hash": settings_hash(settings)})
    return row, settings, model_dir


def _applies(classifier: str, meta: dict) -> bool:
    """Whether a classifier gets a cell for this store (``ensemble`` is built after all stores; zero-shot needs a text tower)."""
    from pintopic.classify.catalog import entry

    item = entry(classifier)
    if item.build is None and item.search is None:
        return False
    return item.needs_library is None or meta.get("library") == item.needs_library


def _ensemble(protocol: Protocol, members: list[dict], max_members: int) -> dict:
    """The ``ensemble`` row (members chosen by CV on the training part), recomputed only when a member changed;
    its model folder ``models/ensemble`` names the members' model folders, for ``pintopic predict``."""
    from pintopic.classify.ensemble import ensemble_row, save_ensemble
    from pintopic.runio import (
        read_json,
        settings_hash,
        stage_is_complete,
        write_json,
        write_parquet,
    )

    settings = {"protocol": PROTOCOL_VERSION, "members": [settings_hash(m["record"]) for m in members],
                "split": protocol.split_hash, "cv": protocol.cv, "seed": protocol.seed, "max_members": max_members,
                "folds": "grouped" if protocol.group_of is not None else "stratified"}
    results_dir = protocol.results_dir
    record, model_dir = results_dir / "rows" / "ensemble.json", results_dir / "models" / "ensemble"
    if stage_is_complete(record, settings) and (model_dir / "model.json").exists():
        return read_json(record)["row"]
    row, predictions = ensemble_row(members, protocol.split_frame, protocol.label_of, protocol.categories,
                                    folds_of=protocol.folds, seed=protocol.seed, max_members=max_members)
    write_parquet(results_dir / "predictions" / "ensemble.parquet", predictions)
    save_ensemble(model_dir, [results_dir / "models" / pair for pair in row["member_models"]], {
        "categories": [str(c) for c in protocol.categories], "labels": row["best_params"]["members"],
        "seed": protocol.seed, "cv_f1_macro": row["cv_f1_macro"], "test_f1_macro": row["test_f1_macro"],
        "settings_hash": settings_hash(settings)})
    write_json(record, {"row": row, "settings": settings, "settings_hash": settings_hash(settings)})
    return row


def _write_tables(protocol: Protocol, rows: list[dict], classifiers: list[str]) -> dict:
    from pintopic.classify.tables import table_csv, table_markdown, table_tex
    from pintopic.runio import canonical_json, write_if_changed

    results_dir = protocol.results_dir
    counts = protocol.split_frame["part"].value_counts()
    results = {
        "rows": rows,
        "split": {**protocol.split_info, "n_train": int(counts.get("train", 0)), "n_test": int(counts.get("test", 0)),
                  "cv": protocol.cv, "path": "split.parquet"},
        "seed": protocol.seed, "categories": protocol.categories, "chance_f1": 1.0 / len(protocol.categories),
        "classifiers": classifiers, "grids": protocol.grids, "metric": protocol.metric,
    }
    write_if_changed(results_dir / "table.md", table_markdown(rows).encode())
    write_if_changed(results_dir / "table.csv", table_csv(rows).encode())
    write_if_changed(results_dir / "table.tex", table_tex(rows).encode())
    write_if_changed(results_dir / "results.json", canonical_json(results).encode())
    return results


def evaluate(run_dir: str | os.PathLike, *, backbones=None, classifiers=("knn", "lsvm", "nn"), cv: int = 5,
             test_size: float = 0.2, split: str = "stratified", seed: int = 0, grids: dict | None = None,
             metric: str = "euclidean", n_jobs: int = 2, progress: bool = True, label_issues: bool = False,
             truth=None) -> dict:
    """Run the study's protocol on every (or the given) feature store; write and return results.json's content.

    ``label_issues``: also flag suspect pins and train through the noise on the first store
    (:mod:`pintopic.classify.noise_stage`); ``truth`` (a crawl's truth.parquet) is read only to score that.
    """
    from tqdm.auto import tqdm

    from pintopic.classify.catalog import probabilistic
    from pintopic.features.finetuned import qualify_backbone
    from pintopic.features.fusion import find_stores
    from pintopic.runio import RunLock, run_paths

    paths = run_paths(run_dir)
    if isinstance(cv, bool) or not isinstance(cv, (int, np.integer)) or cv < 2:
        raise PintopicError(f"--cv must be a whole number of at least 2 (folds of the training part), got {cv!r}")
    if not 0 < test_size < 1:
        raise PintopicError(f"--test-size must be strictly between 0 and 1, got {test_size!r}")
    if not (paths["dataset"] / "sample.parquet").exists():
        raise PintopicError(f"{paths['dataset']} has no sample.parquet; run `pintopic ingest SOURCE {run_dir}` first")
    if metric not in KNN_METRICS:
        raise PintopicError(f"unknown KNN metric {metric!r}; choose euclidean or cosine")
    classifiers = list(classifiers)
    with RunLock(run_dir):
        protocol = _protocol(run_dir, paths["results"], classifiers=classifiers, grids=grids, cv=cv,
                             test_size=test_size, split=split, seed=seed, metric=metric, n_jobs=n_jobs)
        if backbones is not None:
            backbones = [qualify_backbone(name, run_dir) for name in backbones]
        stores = find_stores(paths["features"], backbones)
        rows, members = [], []
        bar = tqdm(total=len(stores) * len(classifiers), desc="evaluate", unit="model", disable=not progress)
        for folder, meta in stores:
            store = _StoreRows(folder, meta, protocol)
            for classifier in classifiers:
                bar.update(1)
                if not _applies(classifier, meta):
                    continue
                row, settings, model_dir = _pair_row(classifier, store)
                warn_if_below_chance(row["test_f1_macro"], len(protocol.categories), f"{row['backbone']} + {classifier}")
                rows.append(row)
                if classifier in probabilistic():  # classifiers whose probabilities an ``ensemble`` cell may average
                    members.append({"spec": row["backbone"], "classifier": classifier, "params": row["best_params"],
                                    "folder": folder, "meta": meta, "metric": metric, "record": settings,
                                    "model_dir": model_dir})
        bar.close()
        if "ensemble" in classifiers and len(members) > 1:
            rows.append(_ensemble(protocol, members, int(protocol.grids["ensemble"]["max_members"][0])))
        results = _write_tables(protocol, rows, classifiers)
        if label_issues and stores:
            from pintopic.classify.noise_stage import noise_stage

            noise_stage(run_dir, _StoreRows(*stores[0], protocol), protocol, truth=truth)
        return results
