"""A study as one TOML file: dataset, features, classifiers, split, run folder.

``load_config`` reads the file, applies ``--set key=value`` overrides, fills defaults and resolves
relative paths against the config file's folder; ``dump_config`` writes the resolved form back.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import tomllib

from pintopic.errors import PintopicError

DEFAULTS: dict[str, Any] = {
    "name": "study",
    "run": {"folder": "runs/study"},
    "dataset": {
        "source": "",
        "layout": "auto",
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
    },
    "report": {"enabled": True, "screenshot": "", "screenshot_height": 900},  # screenshot: a PNG path, "" = none
}


def _merge(base: dict, override: dict, where: str = "") -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if key not in base and not where.startswith("classify.grids"):  # grids name any classifier's parameters
            raise PintopicError(f"unknown config key {where + '.' if where else ''}{key}")
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merge(base[key], value, f"{where}.{key}" if where else key)
        else:
            merged[key] = value
    return merged


def _parse_value(text: str) -> Any:
    """A TOML literal (number, bool, list, quoted string); anything else is taken as a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
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
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PintopicError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as error:
        raise PintopicError(f"config file {path} is not valid TOML: {error}") from None
    config = _merge(DEFAULTS, apply_overrides(raw, overrides or []))
    base = path.resolve().parent
    if not config["dataset"]["source"]:
        raise PintopicError(f"{path}: dataset.source is not set")
    config["dataset"]["source"] = str(_resolve(base, config["dataset"]["source"]))
    config["run"]["folder"] = str(_resolve(base, config["run"]["folder"]))
    for section, key in (("features", "backbones"), ("dataset", "pixel_cache")):
        if isinstance(config[section][key], str) and config[section][key] != "auto":
            config[section][key] = [b.strip() for b in config[section][key].split(",") if b.strip()]
    if isinstance(config["classify"]["classifiers"], str):
        config["classify"]["classifiers"] = [c.strip() for c in config["classify"]["classifiers"].split(",") if c.strip()]
    return config


def _resolve(base: Path, value: str) -> Path:
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate).resolve()


def dump_config(config: dict) -> str:
    import tomli_w

    return tomli_w.dumps(config)
