"""A study as one TOML file: dataset, features, classifiers, split, run folder.

``load_config`` reads the file, applies ``--set key=value`` overrides, fills defaults, checks every value's
type and range (:func:`validate_config`, naming the key) and resolves relative paths against the config
file's folder; ``dump_config`` writes the resolved form back. Names that other layers define (backbones,
classifiers, layouts, splits) are checked by ``pintopic.run`` before any work starts.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pintopic.errors import PintopicError
from pintopic.safeio import (
    MAX_CONFIG_BYTES,
    MAX_METADATA_BYTES,
    UnreadableFileError,
    parse_toml,
    read_text_file,
)

DEFAULTS: dict[str, Any] = {
    "name": "study",
    # stage_processes: each stage in a fresh process of its own, so the run's memory peaks at its largest stage,
    # not at the sum of what earlier stages leave behind (false: all in one process, e.g. under a debugger)
    "run": {"folder": "runs/study", "stage_processes": True},
    "dataset": {
        "source": "",
        "layout": "auto",
        "categories": "",  # a board -> category map (CSV) for boards without a category; "" = none
        "exclude": ["none", "other"],
        "per_category": 0,  # 0 = every ok image
        "min_per_category": 5,
        "seed": 0,
        "max_pixels": 0,  # 0 = Pillow's default limit
        "workers": 0,  # 0 = one per CPU
        "decode_cache": True,  # small lossless copies of costly files (alpha/palette, very large) for extract
        # backbones whose exact model inputs ingest stores for extract (N x 3 x H x W bytes per input size);
        # "auto": features.backbones when that takes at most 2 GiB, [] for none
        "pixel_cache": "auto",
        "max_metadata_bytes": MAX_METADATA_BYTES,  # a larger boards.json / pin.json is bad_metadata, not read
    },
    "features": {
        "backbones": ["lite0"],
        "batch_size": 32,
        "pretrained": True,
        "runtime": "auto",
        "device": "auto",
        "dtype": "float32",  # storage type of the vectors: float32 | float16 | int8 (INT8 compute, float32 vectors)
        "precision": "fp32",  # compute precision of the backbones: fp32 | int8 (calibrated on the training part)
        "tta": "",
        "workers": 0,
        "weights": "",  # a local weights file for the (single) backbone; "" = its own
        "all_rows": False,  # every ok manifest row, not only the sample
    },
    "finetune": {  # trained before extraction when enabled; list "finetuned:<out>" in features.backbones to use it
        "enabled": False,
        "backbone": "lite0",
        "stages": 1,
        "epochs": 8,
        "batch_size": 64,
        "lr": 0.001,
        "patience": 2,
        "views": 2,
        "out": "",  # "" = <backbone>-s<stages>
    },
    "classify": {
        "classifiers": ["knn", "lsvm", "nn"],
        "split": "stratified",
        "test_size": 0.2,
        "cv": 5,
        "seed": 0,
        "knn_metric": "euclidean",  # or "cosine"
        "grids": {},
        # flag suspect pins, train through the noise and keep every pin's probabilities (results/noise.json)
        "label_issues": False,
        "truth": "",  # a noisy crawl's truth.parquet, read only to score on the true labels
    },
    "profile": {"enabled": False, "board_rule": "auto", "user_rule": "filed"},  # needs classify.label_issues
    "report": {"enabled": True, "screenshot": "", "screenshot_height": 900},  # screenshot: a PNG path, "" = none
    "serve": {  # `pintopic serve --config FILE`
        "host": "127.0.0.1",  # a non-loopback host needs api_keys (or insecure = true)
        "port": 8000,
        "models": [],  # model folder names under RUN/results/models/, or paths; [] = the ensemble, else the best pair by CV
        "api_keys": "",  # a file with one key per line; every /v1 call then needs "Authorization: Bearer <key>"
        "insecure": False,  # allow a non-loopback host without keys
        "cors_origins": [],  # [] = no CORS headers (browsers block other sites' pages)
        "workers": 0,  # threads that decode uploads; 0 = one per usable core
        "max_batch": 16,  # images per model run (dynamic batching)
        "max_wait_ms": 5.0,  # how long a batch waits for more images once it has one
        "queue": 64,  # images admitted per model (decoding or waiting) before 503 + Retry-After
        "max_upload_bytes": 32 * 2**20,  # one request's body, counted while it streams in (413 beyond)
        "max_files": 16,  # images per request
        "max_pixels": 0,  # width x height from the header, before decoding; 0 = Pillow's limit (as ingest)
        "max_top_k": 50,
        "retry_after_s": 1,  # the Retry-After of a 503
    },
    # where ingest's decode-verify, extract and crawl-wide predict run: "local" (this machine) or "ray" (a Ray
    # cluster at address: auto, local, HOST:PORT or ray://HOST:10001); actors = embedding actors (0: one per GPU,
    # else one per actor_threads cluster CPUs), actor_threads = inference threads per CPU actor
    "engine": {"kind": "local", "address": "auto", "actors": 0, "actor_threads": 2},
}


#: (lowest, highest) of numeric keys (None: unbounded); ``test_size`` lies strictly between its bounds.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "dataset.per_category": (0, None), "dataset.min_per_category": (0, None), "dataset.seed": (0, 2**32 - 1),
    "dataset.max_pixels": (0, None), "dataset.workers": (0, None), "dataset.max_metadata_bytes": (1, None),
    "features.batch_size": (1, None), "features.workers": (0, None),
    "finetune.stages": (1, None), "finetune.epochs": (1, None), "finetune.batch_size": (1, None),
    "finetune.lr": (0, None), "finetune.patience": (0, None), "finetune.views": (1, None),
    "classify.test_size": (0, 1), "classify.cv": (2, None), "classify.seed": (0, 2**32 - 1),
    "report.screenshot_height": (1, None),
    "serve.port": (1, 65535), "serve.workers": (0, None), "serve.max_batch": (1, None), "serve.max_wait_ms": (0, None),
    "serve.queue": (1, None), "serve.max_upload_bytes": (1, None), "serve.max_files": (1, None),
    "serve.max_pixels": (0, None), "serve.max_top_k": (1, None), "serve.retry_after_s": (0, None),
    "engine.actors": (0, None), "engine.actor_threads": (1, None),
}
#: Bounds that the value may not equal.
EXCLUSIVE = ("finetune.lr", "classify.test_size")
#: Keys whose value may not be empty.
NON_EMPTY = ("run.folder", "dataset.source", "features.backbones", "classify.classifiers", "serve.host", "engine.address")
#: Keys with a fixed set of values.
CHOICES = {"features.runtime": ("auto", "torch", "onnx"), "features.device": ("auto", "cpu", "cuda", "mps"),
           "features.dtype": ("float32", "float16", "int8"), "features.precision": ("fp32", "int8"),
           "features.tta": ("", "none", "flip"),
           "classify.knn_metric": ("euclidean", "cosine"), "engine.kind": ("local", "ray")}


def _merge(base: dict, override: dict, where: str = "") -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in base and not where.startswith("classify.grids"):  # grids name any classifier's parameters
            raise PintopicError(f"unknown config key {name}")
        if isinstance(base.get(key), dict) and not isinstance(value, dict):
            raise PintopicError(f"config key {name} must be a table ([{name}]), not {_shown(value)}")
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merge(base[key], value, name)
        else:
            merged[key] = value
    return merged


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_problem(key: str, value: Any, default: Any) -> str | None:
    """What is wrong with the type of ``value`` for a key whose default is ``default``, or None."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be a whole number"
    if isinstance(default, float):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "must be a number"
    if key == "dataset.pixel_cache" and value == "auto":
        return None
    if isinstance(default, list) or key == "dataset.pixel_cache":
        names = isinstance(value, list) and all(isinstance(item, str) for item in value)
        return None if names else "must be a list of names (or one comma-separated string)"
    if isinstance(default, str):
        return None if isinstance(value, str) else "must be text"
    return None


def validate_config(config: dict) -> None:
    """Check every value's type, range and emptiness; raises :class:`PintopicError` naming the key."""
    for section, defaults in DEFAULTS.items():
        if not isinstance(defaults, dict):
            problem = _type_problem(section, config[section], defaults)
            if problem:
                raise PintopicError(f"config key {section} {problem}, not {_shown(config[section])}")
            continue
        for name, default in defaults.items():
            key, value = f"{section}.{name}", config[section][name]
            problem = _type_problem(key, value, default)
            if problem is None and key in RANGES:
                problem = range_problem(value, *RANGES[key], strict=key in EXCLUSIVE)
            if problem is None and key in NON_EMPTY and not (value.strip() if isinstance(value, str) else value):
                problem = "must not be empty"
            if problem is None and key in CHOICES and value not in CHOICES[key]:
                problem = f"must be one of {', '.join(repr(choice) for choice in CHOICES[key])}"
            if problem:
                raise PintopicError(f"config key {key} {problem}, not {_shown(value)}")
    grids = config["classify"]["grids"]
    for classifier, grid in grids.items():
        if not isinstance(grid, dict) or not all(isinstance(values, list) for values in grid.values()):
            raise PintopicError(f"config key classify.grids.{classifier} must be a table of lists "
                                f"(e.g. k = [1, 5]), not {_shown(grid)}")


def range_problem(value: float, low: float | None, high: float | None, strict: bool = False) -> str | None:
    """What ``value`` must be when it lies outside ``[low, high]`` (``strict``: the bounds themselves excluded;
    None: unbounded), or None when it lies inside."""
    too_low = low is not None and (value <= low if strict else value < low)
    too_high = high is not None and (value >= high if strict else value > high)
    if not (too_low or too_high):
        return None
    if low is not None and high is not None:
        return f"must be {'strictly ' if strict else ''}between {low} and {high}"
    if low is not None:
        return f"must be {'more than' if strict else 'at least'} {low}"
    return f"must be {'less than' if strict else 'at most'} {high}"


def _parse_value(text: str) -> Any:
    """A TOML literal (number, bool, list, quoted string); anything else is taken as a bare string."""
    try:
        return parse_toml(f"v = {text}")["v"]
    except UnreadableFileError:
        return text


def parse_list(text: str) -> list:
    """A TOML list (``[1, 5]``) or comma-separated values, each read as a TOML literal (``1,5,0.5`` -> ``[1, 5, 0.5]``)."""
    value = _parse_value(text.strip())
    if isinstance(value, list):
        return value
    return [_parse_value(part.strip()) for part in str(text).split(",") if part.strip()]


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` overrides; lists may be TOML (``["a","b"]``) or comma-separated."""
    config = copy.deepcopy(config)
    for item in overrides or []:
        if "=" not in item:
            raise PintopicError(f"--set expects KEY=VALUE, got {item!r}")
        dotted, text = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = config
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise PintopicError(f"--set {dotted}: {key} is not a section")
        value = _parse_value(text.strip())
        current = _lookup(DEFAULTS, keys)
        if isinstance(current, list) and isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        node[keys[-1]] = value
    return config


def _lookup(tree: dict, keys: list[str]) -> Any:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict:
    """Read, override, default and resolve a study config; raises PintopicError on bad input."""
    path = Path(path)
    try:
        raw = parse_toml(read_text_file(path, MAX_CONFIG_BYTES, "config file"), path, "config file")
    except UnreadableFileError as error:
        raise PintopicError(str(error)) from None
    config = _merge(DEFAULTS, apply_overrides(raw, overrides or []))
    base = path.resolve().parent
    for section, key in (("features", "backbones"), ("dataset", "pixel_cache"), ("classify", "classifiers"),
                         ("serve", "models")):
        if isinstance(config[section][key], str) and config[section][key] != "auto":
            config[section][key] = [b.strip() for b in config[section][key].split(",") if b.strip()]
    if not config["dataset"]["source"]:
        raise PintopicError(f"{path}: dataset.source is not set")
    validate_config(config)
    config["dataset"]["source"] = str(_resolve(base, config["dataset"]["source"]))
    if config["dataset"]["categories"]:
        config["dataset"]["categories"] = str(_resolve(base, config["dataset"]["categories"]))
    config["run"]["folder"] = str(_resolve(base, config["run"]["folder"]))
    _resolve_serve_paths(config["serve"], base)
    if config["classify"]["truth"]:
        config["classify"]["truth"] = str(_resolve(base, config["classify"]["truth"]))
    return config


def _resolve_serve_paths(serve: dict, base: Path) -> None:
    """The keys file and model entries that are paths (not bare model folder names) against the config's folder."""
    if serve["api_keys"]:
        serve["api_keys"] = str(_resolve(base, serve["api_keys"]))
    models = serve["models"].split(",") if isinstance(serve["models"], str) else serve["models"]
    serve["models"] = [str(_resolve(base, m)) if ("/" in m or m.startswith((".", "~"))) else m
                       for m in (str(item).strip() for item in models) if m]


def _resolve(base: Path, value: str) -> Path:
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate).resolve()


def dump_config(config: dict) -> str:
    import tomli_w

    return tomli_w.dumps(config)
