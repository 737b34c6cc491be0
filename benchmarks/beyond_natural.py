"""Does the configuration chosen on openclipart generalise? The same protocol on natural-images (photos).

Ingests ``../shared/data/natural-images`` (every image, seed 0), extracts lite0, lite1 and the three
whole-frame backbones with flip TTA, then scores the study's KNN, cosine KNN, ``wknn`` / logreg on the
whole-frame fusion, the members of the ensemble chosen in ``docs/results.md`` (whitened ``wknn``, ``lda``),
and the ensemble chosen by CV among them. Prints one JSON object (macro-F1: CV on the training part, test).

    python benchmarks/beyond_natural.py [RUN]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from beyond import (  # the script's own folder is on sys.path
    ROOT,
    WHITENED_WKNN,
    aligned_split,
    load_backbone,
    row_label,
)

VIEW = "@squash@crop1.0"
FUSION = f"lite0@stages3{VIEW}+lite1{VIEW}+lite2{VIEW}"
TWO_VIEWS = FUSION + "+lite0+lite1"  # plus the models' own centre crop
#: (backbone, classifier, KNN metric, grid or None for the default): the study's KNN, then the rows of
#: the ensemble chosen on openclipart and their plain counterparts.
CONFIGURATIONS = (("lite0", "knn", "euclidean", None), ("lite0", "knn", "cosine", None),
                  (FUSION, "wknn", None, None), (FUSION, "logreg", None, None),
                  (FUSION, "wknn", None, WHITENED_WKNN), (TWO_VIEWS, "wknn", None, WHITENED_WKNN),
                  (TWO_VIEWS, "lda", None, None), (f"lite0@stages3{VIEW}", "wknn", None, None))


def main() -> None:
    import numpy as np

    from pintopic.classify.catalog import default_grids
    from pintopic.classify.ensemble import Candidate, fit_ensemble
    from pintopic.classify.metrics import f1_macro
    from pintopic.classify.search import grid_search
    from pintopic.dataset import ingest, load_sample
    from pintopic.dataset.split import cv_folds, load_or_make_split
    from pintopic.features import extract

    run = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "runs" / "beyond-natural"
    if not (run / "dataset" / "sample.parquet").exists():
        ingest(ROOT.parent / "shared" / "data" / "natural-images", run, per_category=None, min_per_category=40,
               seed=0, progress=False)
    extract(run, ["lite0", "lite1", f"lite0@stages3{VIEW}", f"lite1{VIEW}", f"lite2{VIEW}"], tta="flip", progress=False)
    sample = load_sample(run)
    sample["image_id"] = sample["image_id"].astype(str)
    split, _ = load_or_make_split(run / "results", sample, test_size=0.2, split="stratified", seed=0)
    label_of = dict(zip(sample["image_id"], sample["category"].astype(str)))
    part_of = dict(zip(split["image_id"], split["part"]))
    loaded = {backbone: load_backbone(run, backbone, "flip") for backbone, *_ in CONFIGURATIONS}
    train_ids, test_ids, rows_of = aligned_split(loaded, part_of)
    y_train = np.array([label_of[i] for i in train_ids])
    y_test = np.array([label_of[i] for i in test_ids])
    folds = cv_folds(y_train, n_splits=5, seed=0)

    report, candidates = {"run": str(run), "rows": {}}, []
    for backbone, classifier, metric, grid in CONFIGURATIONS:
        X_train, X_test = rows_of(backbone, train_ids), rows_of(backbone, test_ids)
        started = time.perf_counter()
        grid = grid or default_grids()[classifier]
        search = grid_search(classifier, X_train, y_train, grid, folds, metric=metric or "euclidean", seed=0)
        label = row_label(backbone, classifier, metric, grid)
        report["rows"][label] = {"cv_f1_macro": round(search["cv_f1_macro"], 4),
                                 "test_f1_macro": round(f1_macro(y_test, search["model"].predict(X_test)), 4),
                                 "best_params": search["best_params"], "seconds": round(time.perf_counter() - started, 1)}
        print(label, report["rows"][label], file=sys.stderr, flush=True)
        if classifier in ("wknn", "logreg", "lda"):
            candidates.append(Candidate(label, classifier, search["best_params"], X_train, X_test, search["model"]))
    ensemble = fit_ensemble(candidates, y_train, folds, seed=0)
    report["ensemble"] = {"members": ensemble["members"], "cv_f1_macro": round(ensemble["cv_f1_macro"], 4),
                          "test_f1_macro": round(f1_macro(y_test, ensemble["test_predictions"]), 4)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
