"""The study's full grid search for one backbone: pintopic's fast search vs plain GridSearchCV (issue 8, part 2).

Prints one JSON object. Data: seeded synthetic features (default 25,600 x 1,024, 32 classes; class centres
in a 48-dim subspace plus isotropic noise, tuned so test macro-F1 lands between 0.3 and 0.8), a stratified
80/20 split, 5-fold stratified CV on the training part, macro-F1.

Baseline: for every classifier and every grid value, ``GridSearchCV(pipeline, {param: [value]},
scoring="f1_macro", n_jobs=2)`` on the same folds, run in its own process session with a wall-time cap per
setting (``--cap`` seconds, default 1800). A setting that hits the cap is killed and recorded with
``"timed_out": true`` and the cap as a lower bound of its time. Then the baseline's best completed setting
is refitted on the whole training part and scored on the test part, as GridSearchCV(refit=True) would.

    python benchmarks/classify.py                       # the full-size comparison (hours for the baseline)
    python benchmarks/classify.py --n 6400 --dim 256    # a quick one
    python benchmarks/classify.py --skip-baseline       # only pintopic's search
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time

import numpy as np

GRID_PARAMETER = {"knn": "n_neighbors", "lsvm": "C", "nn": "batch_size"}


def make_data(n: int, dim: int, n_classes: int, seed: int, separation: float, label_noise: float = 0.3):
    """Seeded features of realistic difficulty and the fixed 80/20 stratified split.

    Separable geometry alone makes every setting score 1.0 at full size; a share of labels reassigned at
    random (as mislabelled pins are) caps the attainable macro-F1 and makes the grid values matter.
    """
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(seed)
    subspace = rng.normal(size=(48, dim)) / np.sqrt(48)
    centres = rng.normal(size=(n_classes, 48)) @ subspace * separation
    y = np.repeat(np.arange(n_classes), n // n_classes)
    rng.shuffle(y)
    X = (centres[y] + rng.normal(size=(len(y), dim))).astype(np.float32)
    noisy = rng.random(len(y)) < label_noise
    y = np.where(noisy, (y + rng.integers(1, n_classes, size=len(y))) % n_classes, y)
    labels = np.array([f"c{v:02d}" for v in y])
    train, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=labels, random_state=seed)
    return X[np.sort(train)], labels[np.sort(train)], X[np.sort(test)], labels[np.sort(test)]


def baseline_estimator(name: str, seed: int):
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from pintopic.classify.estimators import build_classifier

    if name == "knn":
        return Pipeline([("scale", StandardScaler()), ("model", KNeighborsClassifier())])
    if name == "lsvm":  # scikit-learn's defaults, as the study would have run it
        return Pipeline([("scale", StandardScaler()), ("model", LinearSVC())])
    return build_classifier("nn_sklearn", seed=seed)  # scikit-learn's MLPClassifier with nn's settings


def run_one_baseline_setting(args) -> None:
    """Child process: GridSearchCV on one grid value; prints its JSON line."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    X_train, y_train, _, _ = make_data(args.n, args.dim, args.classes, args.seed, args.separation, args.label_noise)
    value = json.loads(args.value)
    started = time.perf_counter()
    search = GridSearchCV(baseline_estimator(args.one, args.seed), {f"model__{GRID_PARAMETER[args.one]}": [value]},
                          scoring="f1_macro", n_jobs=2, refit=False,
                          cv=StratifiedKFold(5, shuffle=True, random_state=args.seed)).fit(X_train, y_train)
    print(json.dumps({"value": value, "cv_f1_macro": float(search.cv_results_["mean_test_score"][0]),
                      "seconds": time.perf_counter() - started}))


def baseline(args, name: str, values) -> dict:
    """Every grid value in its own capped process, then the refit of the best on the training part."""
    from sklearn.metrics import f1_score

    settings = []
    for value in values:
        command = [sys.executable, __file__, "--one", name, "--value", json.dumps(value), "--n", str(args.n),
                   "--dim", str(args.dim), "--classes", str(args.classes), "--seed", str(args.seed),
                   "--separation", str(args.separation), "--label-noise", str(args.label_noise)]
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, _ = child.communicate(timeout=args.cap)
            settings.append(json.loads(out.strip().splitlines()[-1]))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # the child's own session: it and its joblib workers
            child.communicate()
            settings.append({"value": value, "cv_f1_macro": None, "seconds": float(args.cap), "timed_out": True})
        settings[-1]["wall_seconds"] = time.perf_counter() - started
        print(f"baseline {name} {value}: {settings[-1]}", file=sys.stderr)
    done = [s for s in settings if s["cv_f1_macro"] is not None]
    result = {"settings": settings, "cv_seconds": sum(s["seconds"] for s in settings),
              "any_timed_out": len(done) < len(settings)}
    if done:
        best = max(done, key=lambda s: s["cv_f1_macro"])  # first best in grid order, as GridSearchCV
        best = next(s for s in done if s["cv_f1_macro"] == best["cv_f1_macro"])
        X_train, y_train, X_test, y_test = make_data(args.n, args.dim, args.classes, args.seed, args.separation, args.label_noise)
        model = baseline_estimator(name, args.seed).set_params(**{f"model__{GRID_PARAMETER[name]}": best["value"]})
        started = time.perf_counter()
        model.fit(X_train, y_train)
        result["refit_seconds"] = time.perf_counter() - started
        result.update(best_value=best["value"], cv_f1_macro=best["cv_f1_macro"],
                      test_f1_macro=float(f1_score(y_test, model.predict(X_test), average="macro")))
    result["seconds"] = result["cv_seconds"] + result.get("refit_seconds", 0.0)
    return result


def ours(args, name: str, values) -> dict:
    from sklearn.metrics import f1_score

    from pintopic.classify.search import grid_search
    from pintopic.dataset.split import cv_folds

    X_train, y_train, X_test, y_test = make_data(args.n, args.dim, args.classes, args.seed, args.separation, args.label_noise)
    started = time.perf_counter()
    folds = cv_folds(y_train, n_splits=5, seed=args.seed)
    key = "k" if name == "knn" else GRID_PARAMETER[name]
    search = grid_search(name, X_train, y_train, {key: values}, folds, seed=args.seed, n_jobs=2)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "best_value": search["best_params"][key], "cv_f1_macro": search["cv_f1_macro"],
            "cv_scores": {str(r["params"][key]): r["mean_f1_macro"] for r in search["cv_results"]},
            "test_f1_macro": float(f1_score(y_test, search["model"].predict(X_test), average="macro"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=25_600)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--separation", type=float, default=0.55, help="scale of the class centres (difficulty)")
    parser.add_argument("--label-noise", type=float, default=0.3, help="share of labels reassigned to another class at random")
    parser.add_argument("--cap", type=float, default=1800.0, help="baseline wall-time cap per grid setting, seconds")
    parser.add_argument("--classifiers", default="knn,lsvm,nn")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--value", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one_baseline_setting(args)
        return
    import sklearn

    from pintopic.classify.catalog import default_grids

    report = {"benchmark": "classify", "n": args.n, "dim": args.dim, "classes": args.classes, "seed": args.seed,
              "separation": args.separation, "label_noise": args.label_noise, "baseline_cap_seconds_per_setting": args.cap,
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                          "sklearn": sklearn.__version__, "load_average_at_start": os.getloadavg()},
              "classifiers": {}}
    total_ours = total_baseline = 0.0
    for name in args.classifiers.split(","):
        values = next(iter(default_grids()[name].values()))
        entry = {"grid": values, "pintopic": ours(args, name, values)}
        print(f"pintopic {name}: {entry['pintopic']}", file=sys.stderr)
        total_ours += entry["pintopic"]["seconds"]
        if not args.skip_baseline:
            entry["baseline"] = base = baseline(args, name, values)
            total_baseline += base["seconds"]
            if "best_value" in base:
                chosen = entry["pintopic"]["cv_scores"][str(base["best_value"])]
                entry["same_choice"] = entry["pintopic"]["best_value"] == base["best_value"]
                entry["cv_gap_to_baseline_choice"] = abs(entry["pintopic"]["cv_f1_macro"] - chosen)
                entry["test_f1_gap"] = abs(entry["pintopic"]["test_f1_macro"] - base["test_f1_macro"])
            entry["speedup"] = base["seconds"] / entry["pintopic"]["seconds"]
            entry["speedup_is_lower_bound"] = base["any_timed_out"]
        entry["load_average_after"] = os.getloadavg()  # other processes on these shared cores inflate both sides
        report["classifiers"][name] = entry
    report["pintopic_seconds"] = total_ours
    if not args.skip_baseline:
        report["baseline_seconds"] = total_baseline
        report["speedup"] = total_baseline / total_ours
        report["speedup_is_lower_bound"] = any(e["baseline"]["any_timed_out"] for e in report["classifiers"].values())
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
