"""Opening images the same way in every stage: verify, orient, flatten to RGB, or say why not.

Ingest, extraction, prediction and the report all decode through :func:`load_rgb`, so an image that
ingest called ``ok`` is decoded identically later, and a bad one gets one of the statuses below.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

#: Pillow's own decompression-bomb limit, the default for ``too_large``.
DEFAULT_MAX_PIXELS = 89_478_485

#: Every status a file can get; only ``ok`` rows are used downstream.
STATUSES = (
    "ok", "empty", "truncated", "not_an_image", "unsupported", "too_large", "outside_root",
    "missing_image", "bad_metadata", "no_category", "excluded_category", "duplicate", "conflict",
)


class ImageError(Exception):
    """A file that cannot be used as an image; ``status`` is one of :data:`STATUSES`."""

    def __init__(self, status: str, detail: str):
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


def _looks_like_svg(head: bytes) -> bool:
    text = head.lstrip().lower()
    return text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text)


def load_rgb(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS, draft_size: int | None = None):
    """Decode ``path`` fully into an RGB :class:`PIL.Image.Image`.

    EXIF orientation is applied, transparency is composited on white, palette/CMYK/16-bit/grey
    become 8-bit RGB, animations give their first frame. ``draft_size`` lets JPEG decode at a
    reduced scale that still covers ``draft_size`` pixels on both sides. Raises :class:`ImageError`.
    """
    from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
            if not head:
                raise ImageError("empty", "file has 0 bytes")
            if _looks_like_svg(head) or path.suffix.lower() in (".svg", ".svgz"):
                raise ImageError("unsupported", "SVG (vector) images are not decoded")
            handle.seek(0)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    previous_limit = Image.MAX_IMAGE_PIXELS
                    Image.MAX_IMAGE_PIXELS = None  # checked below from the header, before any pixel is allocated
                    try:
                        image = Image.open(handle)
                    finally:
                        Image.MAX_IMAGE_PIXELS = previous_limit
            except UnidentifiedImageError:
                if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
                    raise ImageError("not_an_image", "an HTML page, not an image") from None
                raise ImageError("not_an_image", "no image format recognised") from None
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageError("too_large", f"{width}x{height} = {width * height} pixels > {max_pixels}")
            if width < 1 or height < 1:
                raise ImageError("truncated", f"invalid size {width}x{height}")
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    image.load()
            except (OSError, SyntaxError, ValueError, EOFError) as error:
                raise ImageError("truncated", f"decoding failed: {error}") from None
            return to_rgb(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except MemoryError:
        raise ImageError("too_large", "not enough memory to decode") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError("truncated", f"decoding failed: {error}") from None


def to_rgb(image):
    """8-bit RGB with transparency composited on white (the study's pins have white backgrounds)."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype("uint8"), "L")
    if image.mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    if image.mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")
