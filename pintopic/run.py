"""A whole study from one config: ingest → extract → evaluate → report, each stage skipped when done.

Each stage decides for itself whether its outputs already match its settings (see ``runio``); this
module only threads the config through them, holds the run lock, and records what happened.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from pintopic.config import dump_config, load_config
from pintopic.errors import PintopicError
from pintopic.isolation import call_in_child, can_isolate
from pintopic.runio import (
    RunLock,
    canonical_json,
    read_json,
    settings_hash,
    write_if_changed,
    write_json,
)
from pintopic.safeio import open_append, read_regular


def _none_if_zero(value):
    return value or None


def _pixel_caches(run: Path, data: dict, feats: dict, progress: bool) -> None:
    """The sample's pixel caches for the backbones to extract ("auto": all of them when there are at least
    ``AUTO_MIN_BACKBONES``, unless they exceed the size limit or the free disk)."""
    from pintopic.features.pixel_cache import AUTO_LIMIT_BYTES, AUTO_MIN_BACKBONES, build_pixel_caches
    from pintopic.features.registry import backbone_names

    backbones, limit = data["pixel_cache"], None
    if backbones == "auto":  # fine-tuned backbones do not exist yet at this point: they decode
        backbones = [name for name in backbone_names(feats["backbones"]) if "finetuned:" not in name]
        backbones = backbones if len(backbones) >= AUTO_MIN_BACKBONES else []
        limit = AUTO_LIMIT_BYTES
    if backbones:
        build_pixel_caches(run, backbones, workers=_none_if_zero(data["workers"]), progress=progress, max_bytes=limit,
                           fallback=True)


def _outputs_hash(run: Path) -> str:
    """A digest of every stage's record; equal digests mean no stage changed anything."""
    parts = []
    from pintopic.features.store import complete_stores

    stores = [folder / "meta.json" for folder, _ in complete_stores(run / "features")]
    for path in sorted([run / "dataset" / "dataset.json", run / "results" / "results.json",
                        run / "results" / "noise.json", run / "results" / "profile.json",
                        run / "config.resolved.toml", *stores]):
        if path.exists():
            parts.append([str(path.relative_to(run)), read_regular(path).decode("utf-8", "replace")])
    return settings_hash(parts, length=16)


def _ingest(run: Path, config: dict, progress: bool) -> None:
    from pintopic.dataset import ingest

    data = config["dataset"]
    ingest(
        data["source"], run, layout=data["layout"], exclude=data["exclude"],
        per_category=_none_if_zero(data["per_category"]), min_per_category=data["min_per_category"],
        seed=data["seed"], max_pixels=_none_if_zero(data["max_pixels"]),
        workers=_none_if_zero(data["workers"]), progress=progress, decode_cache=data["decode_cache"],
        categories=data["categories"] or None, max_metadata_bytes=data["max_metadata_bytes"], engine=_engine(config),
    )
    _pixel_caches(run, data, config["features"], progress)


def _engine(config: dict):
    from pintopic.engine import EngineSettings

    return EngineSettings.from_config(config["engine"])


def _finetune(run: Path, config: dict, progress: bool) -> None:
    from pintopic.train.finetuning import finetune

    feats, clf, tune = config["features"], config["classify"], config["finetune"]
    finetune(
        run, backbone=tune["backbone"], stages=tune["stages"], epochs=tune["epochs"],
        batch_size=tune["batch_size"], lr=tune["lr"], patience=tune["patience"], views=tune["views"],
        device=feats["device"], runtime=feats["runtime"], seed=clf["seed"], name=tune["out"] or None,
        test_size=clf["test_size"], split=clf["split"], workers=_none_if_zero(feats["workers"]), progress=progress,
    )


def _extract(run: Path, config: dict, progress: bool) -> list[Path]:
    from pintopic.features import extract

    feats, clf = config["features"], config["classify"]
    return extract(
        run, feats["backbones"], batch_size=feats["batch_size"], workers=_none_if_zero(feats["workers"]),
        device=feats["device"], dtype=feats["dtype"], pretrained=feats["pretrained"],
        runtime=feats["runtime"], tta=feats["tta"] or None, progress=progress, weights=feats["weights"] or None,
        all_rows=feats["all_rows"], engine=_engine(config), precision=feats["precision"], split=clf["split"],
        test_size=clf["test_size"], seed=clf["seed"],
    )


def _evaluate(run: Path, config: dict, progress: bool) -> dict:
    from pintopic.classify import evaluate

    clf = config["classify"]
    return evaluate(
        run, backbones=config["features"]["backbones"], classifiers=clf["classifiers"], cv=clf["cv"],
        test_size=clf["test_size"], split=clf["split"], seed=clf["seed"],
        grids=clf["grids"] or None, metric=clf["knn_metric"], progress=progress, label_issues=clf["label_issues"],
        truth=clf["truth"] or None,
    )


def _profile(run: Path, config: dict, progress: bool) -> None:
    from pintopic.predict.profile import profile

    clf = config["classify"]
    if not clf["label_issues"]:
        raise PintopicError("profile.enabled needs classify.label_issues = true (the pins' probabilities)")
    profile(run, truth=clf["truth"] or None, board_rule=config["profile"]["board_rule"],
            user_rule=config["profile"]["user_rule"], seed=clf["seed"])


def _report(run: Path, config: dict, progress: bool) -> None:
    from pintopic.report import build_report

    report_path = build_report(run)  # a no-op when its inputs (run.json included) are unchanged
    if config["report"]["screenshot"]:
        from pintopic.report.screenshot import screenshot

        screenshot(report_path, config["report"]["screenshot"], height=config["report"]["screenshot_height"])


def check_names(config: dict) -> None:
    """Check the names a config gives (layout, split, backbones, classifiers and their grids) against the stages
    that define them, so a typo fails before any work is done; errors name the key."""
    from pintopic.classify.catalog import resolve_grids
    from pintopic.dataset.layouts import LAYOUTS
    from pintopic.dataset.split import SPLIT_MODES
    from pintopic.features.registry import fusion_components, resolve_backbone

    data, clf = config["dataset"], config["classify"]
    if not os.path.exists(data["source"]):
        raise PintopicError(f"config key dataset.source: {data['source']} does not exist")
    if data["layout"] not in ("auto", *LAYOUTS):
        raise PintopicError(f"config key dataset.layout must be one of auto, {', '.join(LAYOUTS)}, not {data['layout']!r}")
    if clf["split"] not in SPLIT_MODES:
        raise PintopicError(f"config key classify.split must be one of {', '.join(SPLIT_MODES)}, not {clf['split']!r}")
    names = [("features.backbones", name) for name in config["features"]["backbones"]]
    if isinstance(data["pixel_cache"], list):
        names += [("dataset.pixel_cache", name) for name in data["pixel_cache"]]
    if config["finetune"]["enabled"]:
        names.append(("finetune.backbone", config["finetune"]["backbone"]))
    extracted = _extracted_specs(Path(config["run"]["folder"]))
    for key, name in names:
        if name.startswith("finetuned:"):  # made by this run's finetune stage: it may not exist yet
            continue
        if all(part.strip() in extracted for part in name.split("+")):
            continue  # names this run already extracted are known good: a no-op rerun imports no timm or torch
        try:
            for part in fusion_components(name) or [name]:
                resolve_backbone(part)
        except PintopicError as error:
            raise PintopicError(f"config key {key}: {error}") from None
    try:
        resolve_grids(clf["classifiers"], clf["grids"] or None)
    except PintopicError as error:
        raise PintopicError(f"config key classify.classifiers / classify.grids: {error}") from None
    from pintopic.engine.settings import host_and_port

    try:  # a malformed address is a mistake even while engine.kind is local
        host_and_port(config["engine"]["address"])
    except PintopicError as error:
        raise PintopicError(f"config key engine.address: {error}") from None


def _remove_empty_run_folders(created: list[Path]) -> None:
    """Remove the folders this call created (innermost first) if they hold nothing but the run marker and lock."""
    from pintopic.runio import RUN_MARKER

    for folder in created:
        for name in (RUN_MARKER, ".lock"):
            (folder / name).unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            return


def _extracted_specs(run: Path) -> set[str]:
    """Backbone names with a complete feature store in the run (read from the stores' meta.json only)."""
    from pintopic.features.store import complete_stores

    return {meta["spec"] for _, meta in complete_stores(run / "features") if isinstance(meta.get("spec"), str)}


def run_study(config_path: str | Path, overrides: list[str] | None = None, progress: bool = True) -> dict:
    """Run every stage of the study described by ``config_path``; returns the run summary.

    The whole config is checked (types, ranges, names) before any stage runs. The run folder is locked first,
    so a second run on it is refused at once; a config with a bad name leaves no new folder behind.
    """
    config = load_config(config_path, overrides)
    run = Path(config["run"]["folder"])
    created = [folder for folder in (run, *run.parents) if not folder.exists()]
    timings: dict[str, float] = {}
    isolated = config["run"]["stage_processes"] and can_isolate()

    def call(function, *args):
        """``function(*args)`` in a process of its own when isolated: what it leaves (libraries, arenas) is then
        given back when it ends; a timm name's check imports torch and timm, so it goes there too."""
        return call_in_child(run, function, *args) if isolated else function(*args)

    def timed(stage: str, function):
        started = time.perf_counter()
        value = call(function, run, config, progress)
        timings[stage] = time.perf_counter() - started
        return value

    with RunLock(run):  # first, so a second run on the folder is refused at once, before any import
        try:
            call(check_names, config)
        except PintopicError:
            _remove_empty_run_folders(created)  # a typo must not leave a new folder behind
            raise
        write_if_changed(run / "config.resolved.toml", dump_config(config).encode())
        timed("ingest", _ingest)
        if config["finetune"]["enabled"]:
            timed("finetune", _finetune)
        stores = timed("extract", _extract)
        results = timed("evaluate", _evaluate)
        if config["profile"]["enabled"]:
            timed("profile", _profile)
        summary = {
            "config": str(Path(config_path).resolve()), "run": str(run), "stores": [str(path) for path in stores],
            "results": str(run / "results"),
            "report": str(run / "report.html") if config["report"]["enabled"] else None,
        }
        _record(run, summary, timings)
        if config["report"]["enabled"]:
            timed("report", _report)
    table = run / "results" / "table.md"
    if table.exists():
        print(read_regular(table).decode("utf-8", "replace"))
    print(f"run folder: {run}")
    for key in ("results", "report"):
        if summary.get(key):
            print(f"{key}: {summary[key]}")
    return {**summary, "results_json": results, "timings": timings}


def _record(run: Path, summary: dict, timings: dict[str, float]) -> None:
    """Log every run; rewrite run.json (timings of the run that did the work) only when outputs changed."""
    line = canonical_json({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": timings}).replace("\n", " ")
    with open_append(run / "run.log") as log:
        log.write(line + "\n")
    record_path = run / "run.json"
    record = {"summary": summary, "outputs": _outputs_hash(run), "seconds": timings}
    if record_path.exists():
        previous = read_json(record_path)
        if previous.get("outputs") == record["outputs"] and previous.get("summary") == summary:
            return
    write_json(record_path, record)
