"""A whole study from one config: ingest → extract → evaluate → report, each stage skipped when done.

Each stage decides for itself whether its outputs already match its settings (see ``runio``); this
module only threads the config through them, holds the run lock, and records what happened.
"""
from __future__ import annotations

import time
from pathlib import Path

from pintopic.config import dump_config, load_config
from pintopic.runio import (
    RunLock,
    canonical_json,
    read_json,
    settings_hash,
    write_if_changed,
    write_json,
)


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
        build_pixel_caches(run, backbones, workers=_none_if_zero(data["workers"]), progress=progress, max_bytes=limit)


def _outputs_hash(run: Path) -> str:
    """A digest of every stage's record; equal digests mean no stage changed anything."""
    parts = []
    from pintopic.features.store import complete_stores

    stores = [folder / "meta.json" for folder, _ in complete_stores(run / "features")]
    for path in sorted([run / "dataset" / "dataset.json", run / "results" / "results.json",
                        run / "config.resolved.toml", *stores]):
        if path.exists():
            parts.append([str(path.relative_to(run)), path.read_text(encoding="utf-8")])
    return settings_hash(parts, length=16)


def _ingest(run: Path, config: dict, progress: bool) -> None:
    from pintopic.dataset import ingest

    data = config["dataset"]
    ingest(
        data["source"], run, layout=data["layout"], exclude=data["exclude"],
        per_category=_none_if_zero(data["per_category"]), min_per_category=data["min_per_category"],
        seed=data["seed"], max_pixels=_none_if_zero(data["max_pixels"]),
        workers=_none_if_zero(data["workers"]), progress=progress, decode_cache=data["decode_cache"],
    )
    _pixel_caches(run, data, config["features"], progress)


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
        all_rows=feats["all_rows"], precision=feats["precision"], split=clf["split"], test_size=clf["test_size"],
        seed=clf["seed"],
    )


def _evaluate(run: Path, config: dict, progress: bool) -> dict:
    from pintopic.classify import evaluate

    clf = config["classify"]
    return evaluate(
        run, backbones=config["features"]["backbones"], classifiers=clf["classifiers"], cv=clf["cv"],
        test_size=clf["test_size"], split=clf["split"], seed=clf["seed"],
        grids=clf["grids"] or None, metric=clf["knn_metric"], progress=progress,
    )


def _report(run: Path, config: dict) -> None:
    from pintopic.report import build_report

    report_path = build_report(run)  # a no-op when its inputs (run.json included) are unchanged
    if config["report"]["screenshot"]:
        from pintopic.report.screenshot import screenshot

        screenshot(report_path, config["report"]["screenshot"], height=config["report"]["screenshot_height"])


def run_study(config_path: str | Path, overrides: list[str] | None = None, progress: bool = True) -> dict:
    """Run every stage of the study described by ``config_path``; returns the run summary."""
    config = load_config(config_path, overrides)
    run = Path(config["run"]["folder"])
    run.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def timed(stage: str, function):
        started = time.perf_counter()
        value = function(run, config, progress)
        timings[stage] = time.perf_counter() - started
        return value

    with RunLock(run):
        write_if_changed(run / "config.resolved.toml", dump_config(config).encode())
        timed("ingest", _ingest)
        if config["finetune"]["enabled"]:
            timed("finetune", _finetune)
        stores = timed("extract", _extract)
        results = timed("evaluate", _evaluate)
        summary = {
            "config": str(Path(config_path).resolve()), "run": str(run), "stores": [str(path) for path in stores],
            "results": str(run / "results"),
            "report": str(run / "report.html") if config["report"]["enabled"] else None,
        }
        _record(run, summary, timings)
        if config["report"]["enabled"]:
            _report(run, config)
    table = run / "results" / "table.md"
    if table.exists():
        print(table.read_text(encoding="utf-8"))
    print(f"run folder: {run}")
    for key in ("results", "report"):
        if summary.get(key):
            print(f"{key}: {summary[key]}")
    return {**summary, "results_json": results, "timings": timings}


def _record(run: Path, summary: dict, timings: dict[str, float]) -> None:
    """Log every run; rewrite run.json (timings of the run that did the work) only when outputs changed."""
    line = canonical_json({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": timings}).replace("\n", " ")
    with open(run / "run.log", "a", encoding="utf-8") as log:
        log.write(line + "\n")
    record_path = run / "run.json"
    record = {"summary": summary, "outputs": _outputs_hash(run), "seconds": timings}
    if record_path.exists():
        previous = read_json(record_path)
        if previous.get("outputs") == record["outputs"] and previous.get("summary") == summary:
            return
    write_json(record_path, record)
