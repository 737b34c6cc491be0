"""Turning an image file into a model input exactly as the model's own pretrained config says.

Decoding goes through :func:`pintopic.imageio.load_rgb`; resize/crop is timm's eval transform built
from the resolved data config, and its normalisation runs inside the network (:func:`pixels_to_features`). Large JPEGs are decoded at reduced scale (JPEG
draft) only down to twice the resize target, which keeps the result within 1/255 mean absolute
error of full decoding after resizing (checked in tests on real photos).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

#: JPEG draft decoding stops at this multiple of the resize target (shorter side).
DRAFT_FACTOR = 2


@dataclass(frozen=True)
class Preprocessing:
    """Everything that turns decoded RGB pixels into the network's input tensor."""

    input_size: tuple[int, int, int]
    interpolation: str
    crop_pct: float
    crop_mode: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_data_config(cls, config: dict) -> Preprocessing:
        return cls(
            input_size=tuple(int(v) for v in config["input_size"]),
            interpolation=str(config.get("interpolation", "bicubic")),
            crop_pct=float(config.get("crop_pct", 1.0)),
            crop_mode=str(config.get("crop_mode", "center")),
            mean=tuple(float(v) for v in config["mean"]),
            std=tuple(float(v) for v in config["std"]),
        )

    @property
    def scale_size(self) -> int:
        """Shorter side after resizing, before the centre crop (timm's eval rule)."""
        return math.floor(max(self.input_size[1:]) / self.crop_pct)

    @property
    def draft_size(self) -> int:
        return DRAFT_FACTOR * self.scale_size

    def to_dict(self) -> dict:
        """JSON-ready description, including the draft rule because it (slightly) changes pixels."""
        return {**asdict(self), "draft_size": self.draft_size, "decoder": "pintopic.imageio.load_rgb"}


class ImagePreprocessor:
    """Callable ``path -> uint8 CHW array`` (decoded, resized, cropped); picklable, built lazily per worker.

    Normalisation happens inside the network (:func:`pixels_to_features`), so workers hand over 4x
    fewer bytes and the runtime fuses it with the first convolution.
    """

    def __init__(self, preprocessing: Preprocessing):
        self.preprocessing = preprocessing
        self._transform = None

    def __getstate__(self):
        return {"preprocessing": self.preprocessing, "_transform": None}

    def transform(self, image):
        """Resize and crop a decoded RGB image to a uint8 CHW array (timm's eval transform, unnormalised)."""
        if self._transform is None:
            from timm.data import create_transform

            p = self.preprocessing
            self._transform = create_transform(
                input_size=p.input_size, interpolation=p.interpolation, crop_pct=p.crop_pct,
                crop_mode=p.crop_mode, mean=p.mean, std=p.std, is_training=False, use_prefetcher=True)
        return self._transform(image).numpy()

    def decode(self, source, *, name: str = "", max_pixels: int | None = None):
        """Decode a path, or an open binary stream (an upload; ``name`` hints at its format), with this model's
        JPEG draft size; ``max_pixels`` defaults to the dataset stage's limit. Raises ImageError."""
        from pintopic.imageio import DEFAULT_MAX_PIXELS, load_rgb, load_rgb_from

        limit = max_pixels or DEFAULT_MAX_PIXELS
        if hasattr(source, "read"):
            source.seek(0)
            return load_rgb_from(source, name=name, max_pixels=limit, draft_size=self.preprocessing.draft_size)
        return load_rgb(source, max_pixels=limit, draft_size=self.preprocessing.draft_size)

    def __call__(self, path):
        return self.transform(self.decode(path))


def pixels_to_features(model, preprocessing: Preprocessing):
    """Wrap ``model`` so it takes uint8 NCHW pixels and normalises them exactly like timm's eval transform."""
    import torch

    class PixelsToFeatures(torch.nn.Module):
        def __init__(self, inner, mean, std):
            super().__init__()
            self.inner = inner
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

        def forward(self, pixels):
            x = pixels.float().div(255.0).sub(self.mean).div(self.std)
            return self.inner(x.contiguous(memory_format=torch.channels_last))

    return PixelsToFeatures(model, preprocessing.mean, preprocessing.std).eval()
