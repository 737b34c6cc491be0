"""Noisy boards, boards and users (issue 21): the measured goals, on noisy crawls made from openclipart.

    python benchmarks/noise.py                       # everything (about 15 min on 2 shared cores)
    python benchmarks/noise.py --work /work/runs/noise-bench --quick
    python benchmarks/noise.py --seeds 0,1,2,3,4     # the main setting on five crawls (about 12 min)
    python benchmarks/noise.py --seeds 0,1,2,3,4 --rescore   # boards and users again from the stored probabilities
    python benchmarks/noise.py --backbone lite0+lite1+lite2 --outer-folds 10   # the setting that meets every goal (19 min)

Data: Debian's openclipart-png after the dataset stage's cleaning, the 15 categories with at least 40 ok
images (6,282 images), turned into noisy crawls by ``make-crawl`` (40 users with 3 dominant categories,
boards of 10-60 pins, 30 % off-theme pins per board, 10 % of boards filed under a wrong category; the curve
varies both). Features: offline Lite0 weights, extracted once for the openclipart run and joined to each
crawl's pins by their source file (a crawl only copies the files, so the vectors are the ones extract
would give; ``--check-run`` compares them with a run that extracted the crawl itself). Everything is
split by board: out-of-fold probabilities and the cross-fitted evaluation use folds that never split a board.

Measured (each with the truth file, read only here to score):
- flags: precision / recall / F1 of every label-issue method against the truth, and the time to flag
  20,000 x 1,280 features (openclipart's vectors tiled with a little noise) on this machine;
- pin level: 5 board-grouped outer folds; in each, the noise-aware option is chosen by CV on the training
  folds only and scored on the held-out boards' true labels, beside the noisy baseline (given labels) and
  training on the true labels (same features, same classifier); the gap recovered, for macro-F1 and accuracy;
  ``previous`` beside it: the choice among the options without ``posterior`` (the method before soft labels),
  also at board and user level, so both are measured in one run;
- board level: the chosen option's cross-fitted pin probabilities aggregated per board (rule chosen by
  agreement with the given labels), accuracy on boards with >= 10 pins and its curve over pins and noise;
- user level: mean Jensen-Shannon divergence of interest profiles (users with >= 50 pins);
- a reference for both: the same aggregation of the pin model trained on the true labels (what the pin model
  allows when its training labels are made right);
- the flagging on the clean sets (openclipart as it is, natural-images): how many pins, the top flags.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OPENCLIPART = "/usr/share/openclipart/png"
NATURAL = ROOT.parent / "shared" / "data" / "natural-images"
MAIN_NOISE = (0.3, 0.1)
CLEAN_SET_BACKBONE = "lite0"  # the clean sets' flags (features_run's default), whatever --backbone is
CURVE_NOISE = ((0.1, 0.1), (0.3, 0.1), (0.5, 0.1), (0.3, 0.3))
USERS, SEED = 40, 0
GOALS = {"gap_recovered": 0.5, "flag_precision": 0.7, "flag_recall": 0.7, "flag_seconds": 60.0,
         "board_accuracy": 0.95, "user_js": 0.05}


def features_run(folder: Path, source, backbone: str = "lite0") -> tuple[Path, Path, dict]:
    """Ingest ``source`` (folders, categories with >= 40 ok images) and extract ``backbone`` (or each part of a
    fusion ``a+b``) once, reused after; ``(run, store folder, store meta)``."""
    from pintopic.dataset import ingest
    from pintopic.features import extract
    from pintopic.features.fusion import find_stores
    from pintopic.features.pixel_cache import build_pixel_caches

    ingest(source, folder, min_per_category=40, seed=0, progress=False)
    for part in backbone.split("+"):
        build_pixel_caches(folder, [part], progress=False)
        extract(folder, [part], progress=False)
    (store, meta), = find_stores(folder / "features", [backbone])
    return folder, store, meta


def base_vectors(run: Path, store: Path, meta: dict) -> dict:
    """``path -> vector`` of every sampled image of a folders run (its path relative to the source)."""
    from pintopic.dataset import load_sample
    from pintopic.features.fusion import load_store

    sample = load_sample(run)
    ids, X = load_store(store, meta, ids=list(sample["image_id"].astype(str)))
    by_id = dict(zip(ids, X))
    return {path: by_id[i] for path, i in zip(sample["path"], sample["image_id"].astype(str))}


def source_folder(run: Path, out: Path) -> Path:
    """The run's sampled images as a folders dataset (hard links), the source of every noisy crawl."""
    from pintopic.dataset import image_file, load_sample

    if out.exists():
        return out
    for _, row in load_sample(run).iterrows():
        target = out / row["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(image_file(row), target)
    return out


def crawl_folder(work: Path, off_theme: float, wrong: float, seed: int = SEED) -> Path:
    """Where the noisy crawl of these settings and seed lives (seed 0's keeps the name it had before seeds)."""
    return work / (f"crawl-{off_theme}-{wrong}" + (f"-seed{seed}" if seed != SEED else ""))


def noisy_pins(source: Path, work: Path, vectors: dict, off_theme: float, wrong: float, seed: int = SEED):
    """A noisy crawl's pins: features, given and true class indices, users, board keys, classes, and the seed that
    made the crawl (also the seed of every split and model measured on it)."""
    import pandas as pd

    from pintopic.dataset import make_crawl
    from pintopic.dataset.split import board_keys

    crawl = crawl_folder(work, off_theme, wrong, seed)
    if not (crawl / "truth.parquet").exists():
        make_crawl(source, crawl, users=USERS, seed=seed, off_theme=off_theme, wrong_boards=wrong, board_size=(10, 60))
    truth = pd.read_parquet(crawl / "truth.parquet")
    classes = np.array(sorted(set(truth["category"]) | set(truth["listed_category"])))
    return {"X": np.stack([vectors[p] for p in truth["source_path"]]).astype(np.float32),
            "given": np.searchsorted(classes, truth["listed_category"]), "true": np.searchsorted(classes, truth["category"]),
            "users": truth["user"].to_numpy(), "boards": board_keys(truth["user"], truth["board"]), "classes": classes,
            "truth": truth, "crawl": crawl, "seed": seed}


def flag_measures(pins: dict) -> dict:
    """Every label-issue method against the truth, on board-grouped out-of-fold probabilities of all pins."""
    from pintopic.classify.label_issues import METHODS, flag_label_issues, flag_quality
    from pintopic.classify.oof import grouped_out_of_fold

    started = time.perf_counter()
    P, _ = grouped_out_of_fold(pins["X"], pins["given"], pins["boards"], np.arange(len(pins["classes"])), seed=pins["seed"])
    issues = flag_label_issues(P, pins["given"], pins["boards"], pins["users"])
    seconds = time.perf_counter() - started
    truth = pins["given"] != pins["true"]
    return {"seconds": round(seconds, 2), "n_pins": len(truth), "issues": int(truth.sum()),
            "estimated_off_theme": issues.attrs["off_theme"], "estimated_wrong_boards": issues.attrs["wrong_boards"],
            **{name: flag_quality(issues[f"flag_{name}"], truth) for name in METHODS}}


def cross_fitted(pins: dict, n_splits: int = 5) -> dict:
    """Board-grouped outer folds: per fold, the option chosen by CV on its training boards, every option, the noisy
    baseline and true-label training, scored on the held-out boards; pooled predictions and probabilities of the
    chosen option and of ``previous``, the choice among the options without ``posterior`` (the method before it)."""
    from pintopic.classify.noise_aware import OPTIONS, choose_option
    from pintopic.classify.oof import probabilities
    from pintopic.dataset.split import cv_folds

    X, given, true, boards, users = pins["X"], pins["given"], pins["true"], pins["boards"], pins["users"]
    K, seed = len(pins["classes"]), pins["seed"]
    names = (*OPTIONS, "chosen", "previous", "true_labels")
    probs = {name: np.zeros((len(given), K)) for name in names}
    choices = []
    for outer, (train, test) in enumerate(cv_folds(given, boards, n_splits=n_splits, seed=seed)):
        folds = cv_folds(given[train], boards[train], n_splits=5, seed=seed)
        result = choose_option(X[train], given[train], boards[train], users[train], folds, np.arange(K), seed=seed)
        for name, fold_probs in every_option(pins, train, test, folds, result).items():
            probs[name][test] = fold_probs
        probs["chosen"][test] = probabilities(result["model"], X[test], np.arange(K))
        previous = max((o for o in OPTIONS if o != "posterior"), key=lambda o: (result["cv"][o], -OPTIONS.index(o)))
        probs["previous"][test] = probs[previous][test]
        posterior = result["evidence"].soft.get(result["balance"], (None, {}))[1]
        choices.append({"fold": outer, "chosen": result["chosen"], "balance": result["balance"], **posterior,
                        "previous": previous, "cv": result["cv"], "posterior_cv_by_balance": result["balances_cv"],
                        "test_true_f1": {name: _f1(true[test], probs[name][test].argmax(axis=1)) for name in names},
                        "test_true_accuracy": {name: round(float(np.mean(true[test] == probs[name][test].argmax(axis=1))), 4)
                                               for name in names}})
        print(f"  outer fold {outer}: chose {result['chosen']} (balance {result['balance']}); previous {previous}",
              file=sys.stderr)
    predictions = {name: p.argmax(axis=1) for name, p in probs.items()}
    scores = {name: {"f1_macro": _f1(true, pred), "accuracy": float(np.mean(true == pred)),
                     "f1_macro_given": _f1(given, pred)} for name, pred in predictions.items()}
    return {"scores": scores, "folds": choices, "probabilities": probs["chosen"], "previous_probabilities": probs["previous"],
            "true_label_probabilities": probs["true_labels"]}


def every_option(pins: dict, train, test, folds, result) -> dict:
    """Test probabilities of every option (``posterior`` at its best CV balance) and of true-label training, each
    fitted on the whole training part as the chosen one is."""
    from pintopic.classify.noise_aware import OPTIONS, fit_option, gather_evidence
    from pintopic.classify.oof import probabilities, project

    X, given, classes, seed = pins["X"], pins["given"][train], np.arange(len(pins["classes"])), pins["seed"]
    balance = float(max(result["balances_cv"], key=result["balances_cv"].get))
    evidence = result["evidence"]
    if balance not in evidence.soft:
        evidence = gather_evidence(project(result["basis"], X[train]), given, pins["boards"][train], pins["users"][train],
                                   folds, classes, balances=(balance,), seed=seed)
    Z, Z_test = project(result["basis"], X[train]), project(result["basis"], X[test])
    fitted = {option: fit_option(option, Z, given, evidence, balance=balance, seed=seed) for option in OPTIONS}
    fitted["true_labels"] = fit_option("none", Z, pins["true"][train], None, seed=seed)
    return {name: probabilities(model, Z_test, classes) for name, model in fitted.items()}


def gap_recovered(scores: dict, metric: str, name: str = "chosen") -> float:
    noisy, clean, chosen = (scores[key][metric] for key in ("none", "true_labels", name))
    return round((chosen - noisy) / (clean - noisy), 3) if clean != noisy else float("nan")


def _f1(y, pred) -> float:
    from pintopic.classify.metrics import f1_macro

    return round(f1_macro(y, pred), 4)


def board_and_user_measures(pins: dict, probs: np.ndarray, work: Path, tag: str) -> dict:
    """``pintopic profile`` on the cross-fitted probabilities (every pin from a model that never saw its board)."""
    from pintopic.predict.profile import PROBABILITY_PREFIX

    truth = pins["truth"]
    table = truth[["user", "board", "pin"]].assign(image_id=truth["pin"], given=pins["classes"][pins["given"]], part="test")
    for k, name in enumerate(pins["classes"]):
        table[PROBABILITY_PREFIX + name] = probs[:, k]
    folder = work / f"profile-{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    table.to_parquet(folder / "predictions.parquet")
    return profile_measures(folder / "predictions.parquet", pins["crawl"] / "truth.parquet")


def profile_measures(predictions: Path, truth: Path) -> dict:
    """``pintopic profile`` of a predictions file against ``truth``: boards (also by size) and users under every rule."""
    import pandas as pd

    from pintopic.predict.profile import profile

    record = profile(predictions, truth=truth)
    boards = pd.read_parquet(predictions.parent / "boards.parquet")
    record["truth"]["users"].pop("per_user")
    users_by_rule = record["truth"]["users_by_rule"]
    by_size = {}
    for low, high in ((10, 20), (20, 40), (40, 61)):
        chosen = boards[(boards["n_pins"] >= low) & (boards["n_pins"] < high)]
        by_size[f"{low}-{high - 1}"] = {"boards": len(chosen), "accuracy": round(float(
            (chosen["predicted_category"] == chosen["true_category"]).mean()), 3) if len(chosen) else None}
    return {"board_rule": record["board_rule"], "agreement": record["board_rule_agreement"],
            "boards": record["truth"]["boards"], "by_board_size": by_size, "user_rule": record["user_rule"],
            "users": record["truth"]["users"], "users_by_rule": users_by_rule}


def timing_20k(pins: dict, rows: int = 20_000) -> dict:
    """Seconds to flag ``rows`` x 1,280 features (openclipart's pins tiled, jittered; boards renamed per copy)."""
    from pintopic.classify.label_issues import flag_label_issues
    from pintopic.classify.oof import grouped_out_of_fold

    rng = np.random.default_rng(0)
    copies = int(np.ceil(rows / len(pins["given"])))
    X = np.concatenate([pins["X"] + rng.normal(0, 0.01, pins["X"].shape).astype(np.float32) for _ in range(copies)])[:rows]
    given = np.tile(pins["given"], copies)[:rows]
    boards = np.concatenate([[f"{c}:{b}" for b in pins["boards"]] for c in range(copies)])[:rows]
    users = np.concatenate([[f"{c}:{u}" for u in pins["users"]] for c in range(copies)])[:rows]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    P, _ = grouped_out_of_fold(X, given, boards, np.arange(len(pins["classes"])), seed=pins["seed"])
    middle = time.perf_counter()
    flag_label_issues(P, given, boards, users)
    done = time.perf_counter()
    return {"rows": rows, "dim": X.shape[1], "seconds": round(done - started, 2), "oof_seconds": round(middle - started, 2),
            "flag_seconds": round(done - middle, 2), "load_average_before": round(load, 2), "cores": os.cpu_count()}


def clean_set_flags(run: Path, store: Path, meta: dict, top: int = 12) -> dict:
    """The flagging on a clean folders set (every image its own board): how many, and the top flags."""
    from pintopic.classify.label_issues import flag_label_issues
    from pintopic.classify.oof import grouped_out_of_fold
    from pintopic.dataset import load_sample
    from pintopic.features.fusion import load_store

    sample = load_sample(run)
    ids, X = load_store(store, meta, ids=list(sample["image_id"].astype(str)))
    classes = np.array(sorted(sample["category"].unique()))
    given = np.searchsorted(classes, sample["category"])
    P, _ = grouped_out_of_fold(X, given, ids, np.arange(len(classes)), seed=SEED)
    issues = flag_label_issues(P, given, ids)
    flagged = issues.assign(path=sample["path"].to_numpy(), given=classes[given],
                            suggested=classes[issues["suggested"]])[issues["flagged"]]
    worst = flagged.sort_values("score", ascending=False).head(top)
    return {"n_images": len(sample), "flagged": len(flagged), "share": round(len(flagged) / len(sample), 4),
            "cleanlab_default": int(issues["flag_cleanlab"].sum()),
            "by_given": {str(k): int(v) for k, v in flagged["given"].value_counts().items()},
            "top": worst[["path", "given", "suggested", "score"]].round(4).to_dict(orient="records")}


def curve_figure(curves: dict, path: Path) -> None:
    from pintopic.report import figures

    figure = figures.board_curve_figure(curves, title="Board accuracy: fewer pins, more noise", goal=GOALS["board_accuracy"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(figures.to_png(figure))


def seed_sweep(source: Path, work: Path, vectors: dict, seeds: list[int], out: Path, suffix: str = "",
               outer_folds: int = 5) -> dict:
    """The main setting on one crawl per seed (each its own users, boards, noise, folds and models): flags, pin gap,
    boards and users per seed, and their spread, because one crawl of 40 users is one draw of which categories
    get how few boards."""
    per_seed = {}
    result = {"seeds": seeds, "outer_folds": outer_folds, "per_seed": per_seed}
    for seed in seeds:
        print(f"seed {seed} ...", file=sys.stderr)
        pins = noisy_pins(source, work, vectors, *MAIN_NOISE, seed=seed)
        fitted = cross_fitted(pins, n_splits=outer_folds)
        tag = _seed_tag(seed, suffix, outer_folds)
        measures = board_and_user_measures(pins, fitted["probabilities"], work, tag)
        reference = board_and_user_measures(pins, fitted["true_label_probabilities"], work, f"{tag}-true-labels")
        flags = flag_measures(pins)
        per_seed[str(seed)] = {
            "n_pins": len(pins["given"]), "n_boards": len(set(pins["boards"])),
            "noise_rate": round(float(np.mean(pins["given"] != pins["true"])), 4),
            "flags": {"board": flags["board"], "cleanlab": flags["cleanlab"]},
            "gap_recovered": {m: gap_recovered(fitted["scores"], m) for m in ("f1_macro", "accuracy")},
            "chosen": [fold["chosen"] for fold in fitted["folds"]], **_profile_figures(measures, reference)}
        result["summary"] = _sweep_summary(per_seed)
        save(result, out)
    return result


def _seed_tag(seed: int, suffix: str, outer_folds: int) -> str:
    return f"seed{seed}{suffix}" + (f"-{outer_folds}folds" if outer_folds != 5 else "")


def _profile_figures(measures: dict, reference: dict) -> dict:
    """A seed's board and user figures (the chosen probabilities' and the true-label reference's)."""
    return {"board_accuracy": measures["boards"]["accuracy"], "user_rule": measures["user_rule"], "user_js": measures["users"],
            "user_js_by_rule": {rule: users["mean_js_divergence"] for rule, users in measures["users_by_rule"].items()},
            "true_labels": {"board_accuracy": reference["boards"]["accuracy"], "user_js": reference["users"],
                            "user_js_by_rule": {rule: users["mean_js_divergence"]
                                                for rule, users in reference["users_by_rule"].items()}}}


def rescore(work: Path, out: Path, seeds: list[int], suffix: str, outer_folds: int) -> dict:
    """Recompute the board and user figures of a seed sweep in ``out`` with the current ``pintopic profile``, from
    the cross-fitted probabilities the sweep stored (``profile-<tag>/predictions.parquet``): the models are not
    refitted, so flags and the pin gap stay as measured."""
    result = json.loads(out.read_text())
    for seed in seeds:
        tag = _seed_tag(seed, suffix, outer_folds)
        crawl = crawl_folder(work, *MAIN_NOISE, seed)
        measures, reference = (profile_measures(work / f"profile-{name}" / "predictions.parquet", crawl / "truth.parquet")
                               for name in (tag, f"{tag}-true-labels"))
        result["per_seed"][str(seed)].update(_profile_figures(measures, reference))
    result["summary"] = _sweep_summary(result["per_seed"])
    result["rescored"] = {"date": date.today().isoformat(), "seeds": seeds,
                          "what": "board and user figures recomputed by the current `pintopic profile` from the stored "
                                  "cross-fitted probabilities (models not refitted: flags and pin gap as first measured)"}
    save(result, out)
    return result


def _sweep_summary(per_seed: dict) -> dict:
    """Mean, min and max over seeds of each goal's figure, and in how many seeds it is met."""
    figures = {"flag_precision": lambda r: r["flags"]["board"]["precision"], "flag_recall": lambda r: r["flags"]["board"]["recall"],
               "gap_recovered_f1": lambda r: r["gap_recovered"]["f1_macro"], "board_accuracy": lambda r: r["board_accuracy"],
               "user_js": lambda r: r["user_js"]["mean_js_divergence"],
               "user_js_true_labels": lambda r: r["true_labels"]["user_js"]["mean_js_divergence"]}
    for rule in next(iter(per_seed.values())).get("user_js_by_rule", {}):
        figures[f"user_js_{rule}"] = lambda r, rule=rule: r["user_js_by_rule"][rule]
    goals = {"flag_precision": GOALS["flag_precision"], "flag_recall": GOALS["flag_recall"], "gap_recovered_f1": GOALS["gap_recovered"],
             "board_accuracy": GOALS["board_accuracy"]}
    summary = {}
    for name, read in figures.items():
        values = np.array([read(record) for record in per_seed.values()], dtype=float)
        entry = {"mean": round(float(values.mean()), 4), "min": round(float(values.min()), 4), "max": round(float(values.max()), 4)}
        if name.startswith("user_js") and name != "user_js_true_labels":
            entry["met_in"] = int((values <= GOALS["user_js"]).sum())
        elif name in goals:
            entry["met_in"] = int((values >= goals[name]).sum())
        summary[name] = entry
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(ROOT.parent / "runs" / "noise-bench"), help="runs, crawls and features go here")
    parser.add_argument("--quick", action="store_true", help="the main setting only, no curve over noise, no clean sets")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/noise-<date>[-<backbone>].json)")
    parser.add_argument("--backbone", default="lite0", help="a backbone or a fusion such as lite0+lite1+lite2")
    parser.add_argument("--seeds", default=None, help="comma-separated crawl seeds: the main setting once per crawl, "
                        "nothing else (JSON default benchmarks/results/noise-<date>-seeds.json)")
    parser.add_argument("--outer-folds", type=int, default=5, help="board-grouped folds of the cross-fitting (each "
                        "pin scored by a model trained on the other folds' boards)")
    parser.add_argument("--rescore", action="store_true", help="with --seeds: recompute the board and user figures of "
                        "the sweep's JSON (--out or the default path) from the probabilities it stored, nothing refitted")
    args = parser.parse_args()
    work = Path(args.work)
    started = time.perf_counter()
    suffix = "" if args.backbone == "lite0" else "-" + args.backbone.replace("+", "-")
    folds = "" if args.outer_folds == 5 else f"-{args.outer_folds}folds"
    if args.seeds:
        out = Path(args.out or ROOT / "benchmarks" / "results" / f"noise-{date.today().isoformat()}-seeds{suffix}{folds}.json")
        seeds = [int(s) for s in args.seeds.split(",")]
        if args.rescore:
            print(json.dumps(rescore(work, out, seeds, suffix, args.outer_folds)["summary"], indent=2))
            return
    base_run, base_store, base_meta = features_run(work / "openclipart", OPENCLIPART, args.backbone)
    vectors = base_vectors(base_run, base_store, base_meta)
    source = source_folder(base_run, work / "source")
    if args.seeds:
        result = seed_sweep(source, work, vectors, seeds, out, suffix, args.outer_folds)
        result["seconds"] = round(time.perf_counter() - started, 1)
        print(save(result, out))
        return
    pins = noisy_pins(source, work, vectors, *MAIN_NOISE)
    result = {"date": date.today().isoformat(), "machine": {"python": platform.python_version(), "cores": os.cpu_count(),
              "platform": platform.platform()}, "setting": {"off_theme": MAIN_NOISE[0], "wrong_boards": MAIN_NOISE[1],
              "users": USERS, "board_size": [10, 60], "seed": SEED, "backbone": args.backbone, "outer_folds": args.outer_folds, "n_pins": len(pins["given"]),
              "n_boards": len(set(pins["boards"])), "noise_rate": round(float(np.mean(pins["given"] != pins["true"])), 4)},
              "goals": GOALS}
    print("flags ...", file=sys.stderr)
    result["flags"] = flag_measures(pins)
    print("pin level (cross-fitted) ...", file=sys.stderr)
    fitted = cross_fitted(pins, n_splits=args.outer_folds)
    result["pin_level"] = {"scores": fitted["scores"], "folds": fitted["folds"],
                           "gap_recovered": {m: gap_recovered(fitted["scores"], m) for m in ("f1_macro", "accuracy")},
                           "gap_recovered_previous": {m: gap_recovered(fitted["scores"], m, "previous")
                                                      for m in ("f1_macro", "accuracy")}}
    result["boards_users"] = board_and_user_measures(pins, fitted["probabilities"], work, f"main{suffix}{folds}")
    result["boards_users_previous"] = board_and_user_measures(pins, fitted["previous_probabilities"], work,
                                                              f"main{suffix}{folds}-previous")
    # a reference, not a method: the same aggregation of a pin model trained on the true labels (same features and
    # classifier), i.e. how far boards and users can get when only the pins' noisy labels are made right
    result["boards_users_true_labels"] = board_and_user_measures(pins, fitted["true_label_probabilities"], work,
                                                                 f"main{suffix}{folds}-true-labels")
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"noise-{result['date']}{suffix}{folds}.json")
    save(result, out)
    print("timing 20k ...", file=sys.stderr)
    result["timing_20k"] = timing_20k(pins)
    curves = {f"off-theme {MAIN_NOISE[0]:.0%}, wrong {MAIN_NOISE[1]:.0%}": result["boards_users"]["boards"]["curve"]}
    if not args.quick:
        result["noise_curve"] = {}
        for off_theme, wrong in CURVE_NOISE:
            if (off_theme, wrong) == MAIN_NOISE:
                continue
            print(f"noise {off_theme}/{wrong} ...", file=sys.stderr)
            other = noisy_pins(source, work, vectors, off_theme, wrong)
            other_fit = cross_fitted(other, n_splits=args.outer_folds)
            measures = board_and_user_measures(other, other_fit["probabilities"], work, f"{off_theme}-{wrong}{suffix}{folds}")
            previous = board_and_user_measures(other, other_fit["previous_probabilities"], work,
                                               f"{off_theme}-{wrong}{suffix}{folds}-previous")
            result["noise_curve"][f"{off_theme}-{wrong}"] = {
                "noise_rate": round(float(np.mean(other["given"] != other["true"])), 4), "flags": flag_measures(other),
                "pin_level": other_fit["scores"], "gap_recovered": {m: gap_recovered(other_fit["scores"], m) for m in ("f1_macro", "accuracy")},
                **measures, "previous": {"boards": {k: v for k, v in previous["boards"].items() if k != "curve"},
                                         "users": previous["users"], "board_rule": previous["board_rule"],
                                         "gap_recovered": {m: gap_recovered(other_fit["scores"], m, "previous")
                                                           for m in ("f1_macro", "accuracy")}}}
            curves[f"off-theme {off_theme:.0%}, wrong {wrong:.0%}"] = measures["boards"]["curve"]
            save(result, out)
        print("clean sets ...", file=sys.stderr)
        result["clean_sets"] = {"backbone": CLEAN_SET_BACKBONE,
                                "openclipart": clean_set_flags(*features_run(work / "openclipart", OPENCLIPART))}
        if NATURAL.exists():
            result["clean_sets"]["natural-images"] = clean_set_flags(*features_run(work / "natural-images", NATURAL))
    curve_figure(curves, ROOT / "docs" / "images" / f"noise-board-curve{suffix}{folds}.png")
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(save(result, out))


def save(result: dict, out: Path) -> str:
    """Write ``result`` as JSON to ``out`` (also part-way, so a long run killed late keeps what it measured)."""
    text = json.dumps(result, indent=2, default=float)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
