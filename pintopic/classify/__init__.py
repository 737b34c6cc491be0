"""Classify stage: the study's protocol (split, grid-searched KNN / linear SVM / NN, macro-F1) -> RUN/results/.

Public API: :func:`evaluate`; :func:`pintopic.classify.predict.predict` for fitted models.

The split is made once on the whole sample and shared by every backbone. A store that lacks some sampled
ids (images whose extraction failed) drops exactly those ids for that backbone, with a warning; the row
records how many (``n_dropped``), so backbones stay comparable on the same split.
"""
from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from pintopic.classify.ensemble import PROBABILISTIC
from pintopic.errors import AlignmentError, PintopicError

#: Store meta.json fields a model keeps so predict can re-extract features the same way.
BACKBONE_FIELDS_DROPPED = ("failed", "ids_sha256", "n_rows", "shard_rows", "settings_hash")
#: Bumped when a change here changes results, so recorded rows are recomputed.
PROTOCOL_VERSION = 1
TOP_K_RECORDED = 3


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


def find_stores(features_dir: Path, backbones=None) -> list[tuple[Path, dict]]:
    """Complete feature stores ``(folder, meta)`` sorted by key; ``backbones`` filters by spec or key."""
    from pintopic.runio import read_json

    stores = [(meta.parent, read_json(meta)) for meta in sorted(Path(features_dir).glob("*/meta.json"))]
    if not stores:
        raise PintopicError(f"no feature stores under {features_dir}; run `pintopic extract RUN` first")
    if backbones is None:
        return stores
    chosen = []
    for name in backbones:
        if "+" in str(name):  # a fusion: assembled from its component stores when loaded
            from pintopic.features.fusion import open_store

            chosen.append(open_store(Path(features_dir), name))
            continue
        matches = [(folder, meta) for folder, meta in stores if name in (meta.get("spec"), folder.name)]
        if not matches:
            available = ", ".join(f"{meta.get('spec')} ({folder.name})" for folder, meta in stores)
            raise PintopicError(f"no feature store for backbone {name!r}; available: {available}")
        chosen += [store for store in matches if store not in chosen]
    return chosen


def store_ids(folder: Path) -> list[str]:
    """The image ids a store holds (its id files only; the vectors are checked when loaded)."""
    from pintopic.features.store import read_ids, shard_paths

    ids: list[str] = []
    for _, id_file in shard_paths(folder):
        ids += read_ids(id_file)
    return ids


def _top_predictions(scores: np.ndarray, classes, y_true, ids, kind: str):
    """Per test image: true and predicted category and the top categories with their scores."""
    import pyarrow as pa

    top = np.argsort(-scores, axis=1, kind="stable")[:, :min(TOP_K_RECORDED, scores.shape[1])]
    columns = {"image_id": list(ids), "true": [str(v) for v in y_true], "pred": [str(classes[i]) for i in top[:, 0]]}
    columns["correct"] = [t == p for t, p in zip(columns["true"], columns["pred"])]
    for rank in range(top.shape[1]):
        columns[f"top{rank + 1}"] = [str(classes[i]) for i in top[:, rank]]
        columns[f"score{rank + 1}"] = scores[np.arange(len(top)), top[:, rank]].astype(np.float64)
    columns["score_kind"] = [kind] * len(top)
    return pa.table(columns)


def _fit_pair(name, X_train, y_train, X_test, y_test, test_ids, folds, grid, categories, *, metric, seed, n_jobs,
              backbone_meta=None):
    from pintopic.classify.estimators import class_scores
    from pintopic.classify.metrics import classification_summary
    from pintopic.classify.search import grid_search

    started = time.perf_counter()
    if name == "zeroshot":  # text embeddings of the category names from the backbone's own text tower
        from pintopic.classify.zeroshot import zero_shot_search

        search = zero_shot_search(backbone_meta["spec"], X_train, y_train, grid, folds,
                                  pretrained=bool(backbone_meta.get("pretrained", True)))
    else:
        search = grid_search(name, X_train, y_train, grid, folds, metric=metric, seed=seed, n_jobs=n_jobs)
    fit_seconds = time.perf_counter() - started
    model = search.pop("model")
    scores, kind = class_scores(model, X_test)
    predicted = model.predict(X_test)
    summary = classification_summary(y_test, predicted, categories)
    predictions = _top_predictions(scores, model.classes_, y_test, test_ids, kind)
    return model, search, summary, predictions, fit_seconds


def _ensemble(results_dir: Path, members: list[dict], split_frame, label_of, categories, split_hash, *, cv, seed,
              max_members) -> dict:
    """The ``ensemble`` row (members chosen by CV on the training part), recomputed only when a member changed;
    its model folder ``models/ensemble`` names the members' model folders, for ``pintopic predict``."""
    from pintopic.classify.ensemble import ensemble_row, save_ensemble
    from pintopic.runio import read_json, settings_hash, stage_is_complete, write_json, write_parquet

    settings = {"protocol": PROTOCOL_VERSION, "members": [settings_hash(m["record"]) for m in members],
                "split": split_hash, "cv": cv, "seed": seed, "max_members": max_members}
    record = results_dir / "rows" / "ensemble.json"
    model_dir = results_dir / "models" / "ensemble"
    if stage_is_complete(record, settings) and (model_dir / "model.json").exists():
        return read_json(record)["row"]
    row, predictions = ensemble_row(members, split_frame, label_of, categories, cv=cv, seed=seed, max_members=max_members)
    write_parquet(results_dir / "predictions" / "ensemble.parquet", predictions)
    save_ensemble(model_dir, [results_dir / "models" / pair for pair in row["member_models"]], {
        "categories": [str(c) for c in categories], "labels": row["best_params"]["members"], "seed": seed,
        "cv_f1_macro": row["cv_f1_macro"], "test_f1_macro": row["test_f1_macro"], "settings_hash": settings_hash(settings)})
    write_json(record, {"row": row, "settings": settings, "settings_hash": settings_hash(settings)})
    return row


def evaluate(run_dir: str | os.PathLike, *, backbones=None, classifiers=("knn", "lsvm", "nn"), cv: int = 5,
             test_size: float = 0.2, split: str = "stratified", seed: int = 0, grids: dict | None = None,
             metric: str = "euclidean", n_jobs: int = 2, progress: bool = True) -> dict:
    """Run the study's protocol on every (or the given) feature store; write and return results.json's content.

    A backbone x classifier pair whose inputs (store ids, split, grid, seed, cv, metric) match its record in
    ``results/rows/`` is not recomputed, so a rerun with nothing changed is a no-op.
    """
    from tqdm.auto import tqdm

    from pintopic.classify.grids import resolve_grids
    from pintopic.classify.metrics import confusion_csv
    from pintopic.classify.persist import save_model
    from pintopic.classify.split import cv_folds, load_or_make_split, split_groups
    from pintopic.classify.tables import table_csv, table_markdown, table_tex
    from pintopic.dataset import load_sample
    from pintopic.features.fusion import load_store, store_ids_of
    from pintopic.features.store import ids_checksum
    from pintopic.runio import (RunLock, canonical_json, read_json, run_paths, settings_hash, stage_is_complete,
                                write_if_changed, write_json, write_parquet, write_text)

    paths = run_paths(run_dir)
    results_dir = paths["results"]
    if not (paths["dataset"] / "sample.parquet").exists():
        raise PintopicError(f"{paths['dataset']} has no sample.parquet; run `pintopic ingest SOURCE {run_dir}` first")
    classifiers = list(classifiers)
    resolved_grids = resolve_grids(classifiers, grids)
    if metric not in ("euclidean", "cosine"):
        raise PintopicError(f"unknown KNN metric {metric!r}; choose euclidean or cosine")
    with RunLock(run_dir):
        sample = load_sample(run_dir)
        sample["image_id"] = sample["image_id"].astype(str)
        categories = sorted(sample["category"].astype(str).unique())
        split_frame, split_info = load_or_make_split(results_dir, sample, test_size=test_size, split=split, seed=seed)
        split_hash = settings_hash(split_info)
        part_of = dict(zip(split_frame["image_id"], split_frame["part"]))
        if set(part_of) != set(sample["image_id"]):
            raise AlignmentError("results/split.parquet does not cover exactly the sample's image ids")
        label_of = dict(zip(sample["image_id"], sample["category"].astype(str)))
        groups_all = split_groups(sample, split)
        group_of = dict(zip(sample["image_id"], groups_all)) if groups_all is not None else None
        if backbones is not None:
            from pintopic.features.finetune import qualify_backbone

            backbones = [qualify_backbone(name, run_dir) for name in backbones]
        stores = find_stores(paths["features"], backbones)
        rows, ensemble_members = [], []
        pairs = tqdm(total=len(stores) * len(classifiers), desc="evaluate", unit="model", disable=not progress)
        for folder, meta in stores:
            key, spec = folder.name, str(meta.get("spec", folder.name))
            present = set(store_ids_of(folder, meta))
            used = [image_id for image_id in split_frame["image_id"] if image_id in present]
            n_dropped = len(part_of) - len(used)
            if not used:
                raise AlignmentError(f"feature store {key} holds none of the sampled image ids; it was extracted "
                                     "from another sample; rerun `pintopic extract`")
            if n_dropped:
                warnings.warn(f"{key}: {n_dropped} sampled images have no features (extraction failed); "
                              "they are left out for this backbone", stacklevel=2)
            used_ids, X = load_store(folder, meta, ids=used)
            is_train = np.array([part_of[i] == "train" for i in used_ids])
            y = np.array([label_of[i] for i in used_ids])
            train_ids, test_ids = used_ids[is_train], used_ids[~is_train]
            groups = np.array([group_of[i] for i in train_ids]) if group_of is not None else None
            folds = cv_folds(y[is_train], groups, n_splits=cv, seed=seed)
            backbone_info = {k: v for k, v in meta.items() if k not in BACKBONE_FIELDS_DROPPED}
            for name in classifiers:
                if name == "ensemble":
                    pairs.update(1)  # built after every store, from the probabilistic pairs (classify.ensemble)
                    continue
                if name == "zeroshot" and meta.get("library") != "openclip":
                    pairs.update(1)  # zero-shot needs a text tower: only open_clip backbones get this cell
                    continue
                pair = f"{key}__{name}"
                pair_settings = {
                    "protocol": PROTOCOL_VERSION, "key": key, "classifier": name, "grid": resolved_grids[name],
                    "ids_sha256": ids_checksum(list(used_ids)), "store_ids_sha256": meta.get("ids_sha256"),
                    "split": split_hash, "seed": seed, "cv": cv, "metric": metric if name == "knn" else None,
                }
                record = results_dir / "rows" / f"{pair}.json"
                model_dir = results_dir / "models" / pair
                if stage_is_complete(record, pair_settings) and (model_dir / "model.json").exists():
                    row = read_json(record)["row"]
                else:
                    model, search, summary, predictions, fit_seconds = _fit_pair(
                        name, X[is_train], y[is_train], X[~is_train], y[~is_train], test_ids, folds,
                        resolved_grids[name], categories, metric=metric, seed=seed, n_jobs=n_jobs, backbone_meta=meta)
                    row = {
                        "backbone": spec, "key": key, "classifier": name, "best_params": search["best_params"],
                        "cv_f1_macro": search["cv_f1_macro"], "cv_results": search["cv_results"],
                        "test_f1_macro": summary["f1_macro"], "test_accuracy": summary["accuracy"],
                        "fit_seconds": round(fit_seconds, 3), "n_train": int(is_train.sum()),
                        "n_test": int((~is_train).sum()), "n_dropped": n_dropped,
                        "per_category": summary["per_category"],
                    }
                    write_text(results_dir / "confusion" / f"{pair}.csv", confusion_csv(summary["confusion"], categories))
                    write_parquet(results_dir / "predictions" / f"{pair}.parquet", predictions)
                    save_model(model, model_dir, {
                        "classifier": name, "best_params": search["best_params"],
                        "categories": [str(c) for c in model.classes_], "metric": metric,
                        "backbone": backbone_info, "feature_key": key, "seed": seed,
                        "test_f1_macro": summary["f1_macro"],
                    })
                    write_json(record, {"row": row, "settings": pair_settings, "settings_hash": settings_hash(pair_settings)})
                warn_if_below_chance(row["test_f1_macro"], len(categories), f"{spec} + {name}")
                rows.append(row)
                pairs.update(1)
                if name in PROBABILISTIC:  # classifiers whose probabilities an ``ensemble`` cell may average
                    ensemble_members.append({"spec": spec, "classifier": name, "params": row["best_params"],
                                             "folder": folder, "meta": meta, "metric": metric, "record": pair_settings,
                                             "model_dir": model_dir})
        pairs.close()
        if "ensemble" in classifiers and len(ensemble_members) > 1:
            rows.append(_ensemble(results_dir, ensemble_members, split_frame, label_of, categories, split_hash,
                                  cv=cv, seed=seed, max_members=int(resolved_grids["ensemble"]["max_members"][0])))
        split_counts = split_frame["part"].value_counts()
        results = {
            "rows": rows,
            "split": {**split_info, "n_train": int(split_counts.get("train", 0)), "n_test": int(split_counts.get("test", 0)),
                      "cv": cv, "path": "split.parquet"},
            "seed": seed, "categories": categories, "chance_f1": 1.0 / len(categories),
            "classifiers": classifiers, "grids": resolved_grids, "metric": metric,
        }
        write_if_changed(results_dir / "table.md", table_markdown(rows).encode())
        write_if_changed(results_dir / "table.csv", table_csv(rows).encode())
        write_if_changed(results_dir / "table.tex", table_tex(rows).encode())
        write_if_changed(results_dir / "results.json", canonical_json(results).encode())
    return results
