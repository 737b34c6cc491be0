"""Read whatever a run folder holds so far into one plain structure; note each missing piece instead of failing."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pintopic.features.store import complete_stores
from pintopic.runio import read_json, run_paths
from pintopic.safeio import (
    UnreadableFileError,
    read_capped,
    read_csv_text,
    read_parquet_table,
)


@dataclass
class RunContents:
    """Everything the report shows, each piece ``None``/empty when the run does not have it yet."""

    run_dir: Path
    dataset: dict | None = None
    distribution: dict[str, int] | None = None
    distribution_png: bytes | None = None
    distribution_left_out: list[str] = field(default_factory=list)
    manifest: Any = None
    sample: Any = None
    features: list[dict] = field(default_factory=list)
    results: dict | None = None
    confusion: dict[str, Any] = field(default_factory=dict)
    predictions: dict[str, Any] = field(default_factory=dict)
    config_text: str | None = None
    run_timings: dict | None = None
    noise: dict | None = None  # results/noise.json (evaluate --label-issues)
    label_issues: Any = None  # results/label_issues.parquet
    pin_probabilities: Any = None  # results/pin_probabilities.parquet
    profile: dict | None = None  # results/profile.json (pintopic profile)
    boards: Any = None  # results/boards.parquet
    users: Any = None  # results/users.parquet
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def dataset_arguments(dataset: dict | None) -> dict:
    """The ingest arguments recorded in dataset.json (``arguments``; ``args`` in older runs)."""
    dataset = dataset or {}
    return dataset.get("arguments") or dataset.get("args") or {}


def dataset_categories(dataset: dict | None) -> list[str]:
    """The sampled categories recorded in dataset.json (``sample.categories`` or top-level ``categories``)."""
    dataset = dataset or {}
    return list(dataset.get("categories") or (dataset.get("sample") or {}).get("categories") or [])


def model_name(row: dict) -> str:
    """File stem of a backbone × classifier's confusion, predictions and model files (the evaluate stage's rule)."""
    from pintopic.classify.evaluation import pair_name

    return pair_name(str(row.get("key") or row.get("backbone")), str(row.get("classifier")))


def _read_json(path: Path, contents: RunContents) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError) as error:
        contents.problems.append(f"{path.relative_to(contents.run_dir)} could not be read ({error})")
        return None


def _read_bytes(path: Path, contents: RunContents, max_bytes: int = 64 * 1024**2) -> bytes | None:
    try:
        return read_capped(path, max_bytes)
    except UnreadableFileError as error:
        contents.problems.append(f"{path.relative_to(contents.run_dir)} could not be read ({error.reason})")
        return None


def _read_parquet(path: Path, contents: RunContents):
    try:
        return read_parquet_table(path)
    except UnreadableFileError as error:
        contents.problems.append(f"{path.relative_to(contents.run_dir)} could not be read ({error.reason})")
        return None


def _read_distribution(dataset_dir: Path, contents: RunContents) -> dict[str, int] | None:
    csv_path = dataset_dir / "distribution.csv"
    if csv_path.exists():
        try:
            frame = read_csv_text(csv_path)
            if "sampled" in frame.columns:
                contents.distribution_left_out = sorted(frame.loc[frame["sampled"].astype(int) == 0, "category"])
            return {category: int(count) for category, count in zip(frame["category"], frame["count"])}
        except (OSError, ValueError, KeyError) as error:
            contents.problems.append(f"dataset/distribution.csv could not be read ({error})")
    by_category = ((contents.dataset or {}).get("counts") or {}).get("by_category")
    return {str(key): int(value) for key, value in by_category.items()} if by_category else None


def collect(run_dir: str | os.PathLike) -> RunContents:
    """Load the dataset, features, results, config and timings a run folder holds."""
    paths = run_paths(run_dir)
    contents = RunContents(run_dir=paths["run"])
    dataset_dir = paths["dataset"]
    if (dataset_dir / "dataset.json").exists():
        contents.dataset = _read_json(dataset_dir / "dataset.json", contents)
    else:
        contents.missing.append("dataset (run `pintopic ingest SOURCE RUN`)")
    contents.distribution = _read_distribution(dataset_dir, contents)
    if (dataset_dir / "distribution.png").exists():
        contents.distribution_png = _read_bytes(dataset_dir / "distribution.png", contents)
    for name in ("manifest", "sample"):
        if (dataset_dir / f"{name}.parquet").exists():
            setattr(contents, name, _read_parquet(dataset_dir / f"{name}.parquet", contents))

    for folder, meta in sorted(complete_stores(paths["features"]), key=lambda store: store[0].name):
        contents.features.append({"folder": folder.name, **meta})
    if not contents.features:
        contents.missing.append("features (run `pintopic extract RUN`)")

    results_dir = paths["results"]
    if (results_dir / "results.json").exists():
        contents.results = _read_json(results_dir / "results.json", contents)
    if not contents.results or not contents.results.get("rows"):
        contents.results = None
        contents.missing.append("results (run `pintopic evaluate RUN`)")
    else:
        _collect_model_files(results_dir, contents)

    _collect_noise_files(results_dir, contents)
    config_path = contents.run_dir / "config.resolved.toml"
    if config_path.exists():
        data = _read_bytes(config_path, contents)
        contents.config_text = data.decode("utf-8", "replace") if data is not None else None
    if (contents.run_dir / "run.json").exists():
        contents.run_timings = _read_json(contents.run_dir / "run.json", contents)
    return contents


def _collect_noise_files(results_dir: Path, contents: RunContents) -> None:
    """What ``evaluate --label-issues`` and ``profile`` wrote, when they ran (nothing is missing otherwise)."""
    for name in ("noise", "profile"):
        if (results_dir / f"{name}.json").exists():
            setattr(contents, name, _read_json(results_dir / f"{name}.json", contents))
    for name in ("label_issues", "pin_probabilities", "boards", "users"):
        if (results_dir / f"{name}.parquet").exists():
            setattr(contents, name, _read_parquet(results_dir / f"{name}.parquet", contents))


def _collect_model_files(results_dir: Path, contents: RunContents) -> None:
    for row in contents.results["rows"]:
        name = model_name(row)
        confusion_path = results_dir / "confusion" / f"{name}.csv"
        if confusion_path.exists():
            try:
                contents.confusion[name] = read_csv_text(confusion_path, index_col=0).astype(int)
            except (OSError, ValueError) as error:
                contents.problems.append(f"results/confusion/{name}.csv could not be read ({error})")
        predictions_path = results_dir / "predictions" / f"{name}.parquet"
        if predictions_path.exists():
            frame = _read_parquet(predictions_path, contents)
            if frame is not None:
                contents.predictions[name] = frame


def pretty_json(value: Any) -> str:
    """Indented JSON text for the report's detail blocks."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def decode_cache_of(contents: RunContents):
    """The run's decode-cache folder (ingest's reduced copies of costly files: thumbnails read them), or None."""
    from pintopic.dataset.decode_cache import decode_cache_folder

    return decode_cache_folder(contents.run_dir / "dataset")
