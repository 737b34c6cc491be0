"""Fine-tuned backbones as registry entries: ``finetuned:<name>`` (inside a run) or ``finetuned:<folder>``.

A fine-tune (``pintopic finetune``, :mod:`pintopic.train.finetuning`) writes ``RUN/finetune/<name>/`` with
``model.safetensors`` and ``finetune.json``; this module only reads such folders, so the feature stage
never depends on the trainer.
"""
from __future__ import annotations

import os
from pathlib import Path

from pintopic.errors import PintopicError

PREFIX = "finetuned:"
FINETUNE_JSON = "finetune.json"
MODEL_FILE = "model.safetensors"
HEAD_FILE = "head.safetensors"


def finetune_root(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "finetune"


def qualify_backbone(name: str, run_dir: str | os.PathLike | None = None) -> str:
    """``finetuned:<name>`` of a run -> ``finetuned:<absolute folder>``; any other name is returned unchanged."""
    if not name.startswith(PREFIX):
        return name
    target = name[len(PREFIX):]
    candidates = [Path(target)]
    if run_dir is not None and target and "/" not in target and os.sep not in target:
        candidates.insert(0, finetune_root(run_dir) / target)
    for folder in candidates:
        if (folder / FINETUNE_JSON).is_file():
            return PREFIX + str(folder.resolve())
    return name


def finetuned_folder(name: str) -> Path:
    """The weights folder a ``finetuned:`` name points at, checked to hold a finished fine-tune."""
    folder = Path(name[len(PREFIX):]).expanduser()
    if not (folder / FINETUNE_JSON).is_file() or not (folder / MODEL_FILE).is_file():
        raise PintopicError(
            f"backbone {name!r}: {folder} is not a finished fine-tune (no {FINETUNE_JSON} / {MODEL_FILE}); "
            "run `pintopic finetune RUN` first, or name it finetuned:<name> with the run given")
    return folder.resolve()


def finetuned_info(name: str) -> dict:
    from pintopic.runio import read_json

    return read_json(finetuned_folder(name) / FINETUNE_JSON)


def build_finetuned(name: str):
    """``(model, data_config, source)`` for a ``finetuned:`` backbone: the base architecture with the trained weights."""
    import timm
    import torch

    from pintopic.features.weights import load_weights_file

    folder = finetuned_folder(name)
    info = finetuned_info(name)
    torch.manual_seed(0)
    model = timm.create_model(info["base_model"], pretrained=False, num_classes=0)
    load_weights_file(model, folder / MODEL_FILE)
    config = dict(info["preprocessing"])
    return model, config, f"file:{folder / MODEL_FILE}"
