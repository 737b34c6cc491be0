"""Ensembles: the average of several backbone x classifier pairs' class probabilities.

Members are chosen by greedy forward selection (Caruana et al., 2004) on out-of-fold probabilities of
the training part only: each candidate is refitted on every CV fold's training rows and predicts that
fold's validation rows; a candidate joins while it raises the macro-F1 of the averaged probabilities.
Test labels are never an input: :func:`fit_ensemble` sees the test features only, to predict them.
Only classifiers with probabilities (the catalog's probabilistic entries: logreg, knn, wknn, lda, nn, zeroshot)
are candidates, so every member speaks the same calibrated scale.

A fitted ensemble is saved as ``RUN/results/models/ensemble/model.json``: the member pairs' own model folders
(relative paths) and the categories. ``pintopic predict`` on that folder embeds the images once per member
backbone and averages the members' probabilities, exactly as the ensemble row scored the test part.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pintopic.classify.metrics import f1_macro

MAX_MEMBERS = 5


@dataclass
class Candidate:
    """One backbone x classifier pair with its chosen hyper-parameters and its features (train and test rows)."""

    label: str  # e.g. "lite0+lite1 / logreg"
    classifier: str
    params: dict
    X_train: np.ndarray
    X_test: np.ndarray
    model: object = None  # the pair's model already refitted on all training rows (reused, not refitted)
    metric: str = "euclidean"
    saved: Path | None = None  # or its saved model folder, loaded only if the candidate becomes a member


def _member_model(candidate: Candidate, y_train, n_classes: int, seed: int):
    """A member's model fitted on all training rows: the one in memory, else its saved one, else refitted now."""
    from sklearn.base import clone

    from pintopic.classify.estimators import build_classifier

    if candidate.model is not None:
        return candidate.model
    if candidate.saved is not None:
        from pintopic.classify.persist import load_model

        return load_model(candidate.saved)[0]
    return clone(build_classifier(candidate.classifier, candidate.params, metric=candidate.metric, seed=seed,
                                  n_samples=len(y_train), n_classes=n_classes,
                                  n_features=candidate.X_train.shape[1])).fit(candidate.X_train, y_train)


def aligned_columns(probabilities: np.ndarray, their_classes, classes) -> np.ndarray:
    """Probability columns reordered from ``their_classes`` to ``classes`` (a class a model lacks gets 0)."""
    out = np.zeros((len(probabilities), len(classes)))
    index = {str(c): i for i, c in enumerate(classes)}
    for column, c in enumerate(their_classes):
        out[:, index[str(c)]] = probabilities[:, column]
    return out


def _aligned_probabilities(model, X, classes) -> np.ndarray:
    """``predict_proba`` in ``classes`` order (a fold may lack a rare class)."""
    return aligned_columns(model.predict_proba(X), model.classes_, classes)


def out_of_fold_probabilities(candidate: Candidate, y_train, folds, classes, *, seed: int = 0) -> np.ndarray:
    """(n_train x K) probabilities, each row predicted by a model that did not see it."""
    from sklearn.base import clone

    from pintopic.classify.estimators import build_classifier

    y_train = np.asarray(y_train)
    oof = np.zeros((len(y_train), len(classes)))
    for train, val in folds:
        if candidate.classifier == "zeroshot":
            # not fitted on any row: its out-of-fold predictions are its predictions
            model = _member_model(candidate, y_train, len(classes), seed)
        else:
            model = build_classifier(candidate.classifier, candidate.params, metric=candidate.metric, seed=seed,
                                     n_samples=len(train), n_classes=len(np.unique(y_train[train])),
                                     n_features=candidate.X_train.shape[1])
            model = clone(model).fit(candidate.X_train[train], y_train[train])
        oof[val] = _aligned_probabilities(model, candidate.X_train[val], classes)
    return oof


def select_members(oof: list[np.ndarray], y_train, classes, max_members: int = MAX_MEMBERS) -> tuple[list[int], float]:
    """Greedy forward selection without repeats: ``(member indices, CV macro-F1 of their average)``."""
    y_train = np.asarray(y_train)
    chosen: list[int] = []
    best = -1.0
    total = np.zeros_like(oof[0])
    while len(chosen) < min(max_members, len(oof)):
        trials = [(f1_macro(y_train, classes[(total + oof[i]).argmax(axis=1)]), -i) for i in range(len(oof))
                  if i not in chosen]
        score, negative = max(trials)
        if score <= best:
            break
        chosen.append(-negative)
        total += oof[-negative]
        best = score
    return chosen, best


def fit_ensemble(candidates: list[Candidate], y_train, folds, *, seed: int = 0, max_members: int = MAX_MEMBERS) -> dict:
    """Choose members by CV on the training rows; return members, CV macro-F1 and test probabilities/predictions."""
    from pintopic.classify.catalog import probabilistic

    candidates = [c for c in candidates if c.classifier in probabilistic()]
    if not candidates:
        raise ValueError("an ensemble needs candidates with probabilities (logreg, knn, wknn, lda, nn, zeroshot)")
    y_train = np.asarray(y_train).astype(str)
    classes = np.unique(y_train)
    oof = [out_of_fold_probabilities(c, y_train, folds, classes, seed=seed) for c in candidates]
    members, _ = select_members(oof, y_train, classes, max_members)
    # reported like grid_search's scores: the mean over folds of each validation fold's macro-F1
    averaged = classes[sum(oof[i] for i in members).argmax(axis=1)]
    cv_f1 = float(np.mean([f1_macro(y_train[val], averaged[val]) for _, val in folds]))
    test_probabilities = np.zeros((len(candidates[0].X_test), len(classes)))
    for i in members:  # one member model in memory at a time (a k-NN one holds its training rows)
        model = _member_model(candidates[i], y_train, len(classes), seed)
        test_probabilities += _aligned_probabilities(model, candidates[i].X_test, classes)
    test_probabilities /= len(members)
    return {"members": [candidates[i].label for i in members], "member_indices": members,
            "cv_f1_macro": cv_f1, "classes": classes,
            "candidates": [c.label for c in candidates],
            "candidate_cv_f1_macro": {c.label: float(np.mean([f1_macro(y_train[val], classes[o[val].argmax(axis=1)])
                                                              for _, val in folds])) for c, o in zip(candidates, oof)},
            "test_probabilities": test_probabilities, "test_predictions": classes[test_probabilities.argmax(axis=1)]}


def ensemble_row(members_in: list[dict], split_frame, label_of: dict, categories, *, folds_of, seed: int,
                 max_members: int = MAX_MEMBERS) -> tuple[dict, object]:
    """evaluate's ``ensemble`` cell: candidates are the run's probabilistic pairs ``{spec, classifier, params,
    folder, meta, metric}`` (and ``model_dir``, their saved model, when there is one); rows joined by image_id
    over the ids every candidate's store holds. ``folds_of(train_ids, y_train)`` gives the CV folds, the same
    (grouped, for a group split) as each pair's own search used.

    The test part is predicted by the saved member models (fitted on all their store's training rows), the
    models ``pintopic predict`` loads, so the row scores what the saved ensemble predicts.
    Returns ``(row, predictions table)``; the test labels are used only to score the finished predictions.
    """
    import time

    from pintopic.classify.metrics import classification_summary, top_predictions
    from pintopic.features.fusion import load_store, store_ids_of

    common = None
    for member in members_in:
        ids = set(store_ids_of(member["folder"], member["meta"]))
        common = ids if common is None else common & ids
    ordered = [i for i in split_frame["image_id"] if i in common]
    part_of = dict(zip(split_frame["image_id"], split_frame["part"]))
    train_ids = [i for i in ordered if part_of[i] == "train"]
    test_ids = [i for i in ordered if part_of[i] == "test"]
    y_train = np.array([label_of[i] for i in train_ids])
    folds = folds_of(train_ids, y_train)
    started = time.perf_counter()
    loaded: dict[str, tuple] = {}
    candidates = []
    for member in members_in:
        folder_key = str(member["folder"])
        if folder_key not in loaded:
            loaded[folder_key] = (load_store(member["folder"], member["meta"], train_ids)[1],
                                  load_store(member["folder"], member["meta"], test_ids)[1])
        X_train, X_test = loaded[folder_key]
        model = None
        if member.get("model_dir") is None and member["classifier"] == "zeroshot":
            from pintopic.classify.zeroshot import zero_shot_pipeline

            model = zero_shot_pipeline(member["spec"], sorted(set(y_train)), member["params"]["templates"],
                                       pretrained=bool(member["meta"].get("pretrained", True)))
        candidates.append(Candidate(f"{member['spec']} / {member['classifier']}", member["classifier"],
                                    member["params"], X_train, X_test, model, member.get("metric") or "euclidean",
                                    member.get("model_dir")))
    result = fit_ensemble(candidates, y_train, folds, seed=seed, max_members=max_members)
    seconds = time.perf_counter() - started
    y_test = np.array([label_of[i] for i in test_ids])
    summary = classification_summary(y_test, result["test_predictions"], categories)
    predictions = top_predictions(result["test_probabilities"], result["classes"], y_test, test_ids, "probability")
    row = {
        "backbone": "ensemble", "key": "ensemble", "classifier": "ensemble",
        "best_params": {"members": result["members"]}, "cv_f1_macro": result["cv_f1_macro"],
        "cv_results": [{"params": {"candidate": label}, "mean_f1_macro": score}
                       for label, score in result["candidate_cv_f1_macro"].items()],
        "test_f1_macro": summary["f1_macro"], "test_accuracy": summary["accuracy"], "fit_seconds": round(seconds, 3),
        "n_train": len(train_ids), "n_test": len(test_ids), "n_dropped": len(part_of) - len(ordered),
        "per_category": summary["per_category"],
    }
    saved = [members_in[i].get("model_dir") for i in result["member_indices"]]
    if all(folder is not None for folder in saved):  # evaluate's pairs: the folders a saved ensemble names
        row["member_models"] = [Path(folder).name for folder in saved]
    return row, predictions


def save_ensemble(folder, member_folders, info: dict) -> None:
    """``model.json`` of an ensemble: its member model folders (relative to it, so the results folder can move)."""
    import os

    from pintopic.classify.persist import FORMAT, FORMAT_VERSION, write_model_json

    folder = Path(folder)
    members = [Path(os.path.relpath(Path(member), folder)).as_posix() for member in member_folders]
    write_model_json(folder, {"format": FORMAT, "format_version": FORMAT_VERSION, "classifier": "ensemble",
                              **info, "members": members})


def load_ensemble(folder, info: dict | None = None) -> list[tuple[object, dict]]:
    """``[(pipeline, info)]`` of an ensemble folder's members, each loaded (and checked) by ``load_model``;
    ``info`` is the folder's ``model.json`` when the caller has read it already."""
    from pintopic.classify.persist import load_model, read_model_info
    from pintopic.errors import PintopicError

    folder = Path(folder)
    info = read_model_info(folder) if info is None else info
    members = info.get("members")
    if info.get("classifier") != "ensemble" or not isinstance(members, list) or not members:
        raise PintopicError(f"{folder} is not an ensemble model folder (its model.json lists no members)")
    loaded = []
    for member in members:
        member_folder = (folder / member).resolve()
        if not (member_folder / "model.json").exists():
            raise PintopicError(f"ensemble member {member_folder} is missing; rerun `pintopic evaluate` on the run")
        model, member_info = load_model(member_folder)
        if not hasattr(model, "predict_proba"):
            raise PintopicError(f"ensemble member {member_folder} has no probabilities ({member_info.get('classifier')})")
        loaded.append((model, member_info))
    return loaded


def averaged_probabilities(members_scores: list[tuple[np.ndarray, np.ndarray]], classes) -> np.ndarray:
    """Mean of members' probabilities ``[(probabilities, their classes_)]``, columns aligned to ``classes``."""
    return sum(aligned_columns(p, member_classes, classes) for p, member_classes in members_scores) / len(members_scores)
