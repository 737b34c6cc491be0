"""Does the configuration chosen on openclipart generalise? The same protocol on natural-images (photos).

Ingests ``../shared/data/natural-images`` (every image, seed 0), extracts lite0 and the three whole-frame
backbones with flip TTA, then scores the study's KNN, cosine KNN, and ``wknn`` / logreg on the fusion
chosen in ``docs/results.md``, plus their ensemble chosen by CV. Prints one JSON object (macro-F1: CV on the
training part, test).

    python benchmarks/beyond_natural.py [RUN]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from beyond import ROOT, load_backbone  # the script's own folder is on sys.path

VIEW = "@squash@crop1.0"
FUSION = f"lite0@stages3{VIEW}+lite1{VIEW}+lite2{VIEW}"
CONFIGURATIONS = (("lite0", "knn", "euclidean"), ("lite0", "knn", "cosine"), (FUSION, "wknn", None), (FUSION, "logreg", None))


def main() -> None:
    import numpy as np

    from pintopic.classify.ensemble import Candidate, fit_ensemble
    from pintopic.classify.grids import DEFAULT_GRIDS
    from pintopic.classify.metrics import f1_macro
    from pintopic.classify.search import grid_search
    from pintopic.classify.split import cv_folds, load_or_make_split
    from pintopic.dataset import ingest, load_sample
    from pintopic.features import extract

    run = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "runs" / "beyond-natural"
    if not (run / "dataset" / "sample.parquet").exists():
        ingest(ROOT.parent / "shared" / "data" / "natural-images", run, per_category=None, min_per_category=40,
               seed=0, progress=False)
    extract(run, ["lite0", f"lite0@stages3{VIEW}", f"lite1{VIEW}", f"lite2{VIEW}"], tta="flip", progress=False)
    sample = load_sample(run)
    sample["image_id"] = sample["image_id"].astype(str)
    split, _ = load_or_make_split(run / "results", sample, test_size=0.2, split="stratified", seed=0)
    label_of = dict(zip(sample["image_id"], sample["category"].astype(str)))
    part_of = dict(zip(split["image_id"], split["part"]))
    report, candidates = {"run": str(run), "rows": {}}, []
    for backbone, classifier, metric in CONFIGURATIONS:
        ids, X = load_backbone(run, backbone, "flip")
        train = [i for i, image_id in enumerate(ids) if part_of[image_id] == "train"]
        test = [i for i, image_id in enumerate(ids) if part_of[image_id] == "test"]
        y_train = np.array([label_of[ids[i]] for i in train])
        y_test = np.array([label_of[ids[i]] for i in test])
        folds = cv_folds(y_train, n_splits=5, seed=0)
        started = time.perf_counter()
        search = grid_search(classifier, X[train], y_train, DEFAULT_GRIDS[classifier], folds,
                             metric=metric or "euclidean", seed=0)
        label = f"{backbone} / {classifier}" + (f" ({metric})" if classifier == "knn" else "")
        report["rows"][label] = {"cv_f1_macro": round(search["cv_f1_macro"], 4),
                                 "test_f1_macro": round(f1_macro(y_test, search["model"].predict(X[test])), 4),
                                 "best_params": search["best_params"], "seconds": round(time.perf_counter() - started, 1)}
        print(label, report["rows"][label], file=sys.stderr, flush=True)
        if classifier in ("wknn", "logreg"):  # same ids and order for both: one fusion
            candidates.append(Candidate(label, classifier, search["best_params"], X[train], X[test], search["model"]))
    ensemble = fit_ensemble(candidates, y_train, folds, seed=0)
    report["ensemble"] = {"members": ensemble["members"], "cv_f1_macro": round(ensemble["cv_f1_macro"], 4),
                          "test_f1_macro": round(f1_macro(y_test, ensemble["test_predictions"]), 4)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
