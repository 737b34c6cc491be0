"""The decode cache: ingest, which fully decodes every file anyway, keeps a small lossless copy for extraction.

Extraction then reads ``RUN/dataset/cache/<sha256[:2]>/<sha256>.png`` instead of re-decoding the
original, once for every backbone. Only files that gain are cached, never JPEGs (draft decoding
already reads large ones at reduced scale): PNG with alpha or a palette, GIF, WebP ... (the copy is
already composited on white, in RGB, full size), and any whose shorter side is at least twice
:data:`CACHE_SIDE`, box-reduced by the integer factor that keeps the shorter side >= CACHE_SIDE, but only
where the reduced copy checks out against the full image after a resize to 256 (thin lines in clip art
can make the two differ by more than the 1/255 mean error allowed; such files keep a full-size copy).
Tests check cached copies against the originals through real preprocessings (tests/test_decode_cache.py).
Files are content-addressed, so duplicates share one.
"""
from __future__ import annotations

import os
from pathlib import Path

#: Shorter side the cached copies are reduced towards (never below).
CACHE_SIDE = 512

#: A reduced copy is kept only if, resized to this shorter side (the 224-pixel backbones' resize target),
#: it is within this mean absolute error (0..255) of the full image resized the same way.
CHECK_SIDE = 256
CHECK_TOLERANCE = 0.5
CACHE_FOLDER = "cache"


def cache_file(cache_dir: str | os.PathLike, sha256: str) -> Path:
    """Where the cached copy of the file with this content hash lives."""
    return Path(cache_dir) / sha256[:2] / f"{sha256}.png"


def existing_copy(cache_dir: str | os.PathLike | None, sha256: str | None) -> Path | None:
    """The cached copy of the file with this content hash, when the cache holds one (else None)."""
    if cache_dir is None or not isinstance(sha256, str) or not sha256:
        return None
    path = cache_file(cache_dir, sha256)
    return path if path.exists() else None


def reduction_factor(width: int, height: int, side: int = CACHE_SIDE) -> int:
    """The integer box factor that keeps the shorter side >= ``side`` (1: keep the size)."""
    return max(1, min(width, height) // side)


def cached_copy(image, head: bytes, side: int = CACHE_SIDE):
    """The RGB image to cache (box-reduced when large), or None when the original decodes as cheaply."""
    from PIL import Image

    if head.startswith(b"\xff\xd8"):  # JPEG: draft decoding already reads large ones at reduced scale
        return None
    factor = reduction_factor(*image.size, side=side)
    if factor >= 2:
        width, height = image.size  # a box resize to the rounded size keeps the geometry exact (reduce() pads)
        reduced = image.resize((round(width / factor), round(height / factor)), Image.Resampling.BOX)
        if _resized_error(image, reduced) < CHECK_TOLERANCE:
            return reduced
    plain_rgb_png = head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) > 25 and head[25] == 2
    return None if plain_rgb_png else image  # a plain RGB PNG decodes as cheaply as its copy would


def _resized_error(full, reduced) -> float:
    """Mean absolute error between the two images after a bicubic resize to :data:`CHECK_SIDE` (timm's eval resize)."""
    import numpy as np
    from PIL import Image

    width, height = full.size
    scale = CHECK_SIDE / min(width, height)
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    a = np.asarray(full.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    b = np.asarray(reduced.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    return float(np.abs(a - b).mean())


def write_cached(image, head: bytes, cache_dir: str | os.PathLike, sha256: str, side: int = CACHE_SIDE) -> bool:
    """Write the cached copy of one decoded file (atomically; an existing copy is kept). True if one exists."""
    from pintopic.runio import atomic_path

    path = cache_file(cache_dir, sha256)
    if path.exists():
        return True
    copy = cached_copy(image, head, side)
    if copy is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        copy.save(tmp, format="PNG", compress_level=1)  # fast to write and read; lossless
    return True


def cache_summary(cache_dir: str | os.PathLike) -> dict:
    """Files and bytes in a cache folder (for dataset.json)."""
    files = total = 0
    folder = Path(cache_dir)
    if folder.is_dir():
        for sub in os.scandir(folder):
            if sub.is_dir():
                for entry in os.scandir(sub.path):
                    if entry.name.endswith(".png"):
                        files += 1
                        total += entry.stat().st_size
    return {"files": files, "bytes": total}


def decode_cache_record(dataset_dir: str | os.PathLike) -> dict | None:
    """The decode cache ingest recorded in ``dataset.json`` (``folder``, ``side``, ...), or None without one."""
    from pintopic.runio import read_json

    try:
        record = read_json(Path(dataset_dir) / "dataset.json").get("decode_cache")
    except (OSError, ValueError, AttributeError):
        return None
    return record if isinstance(record, dict) and record.get("folder") else None


def decode_cache_folder(dataset_dir: str | os.PathLike) -> Path | None:
    """The folder of the decode cache ingest wrote, or None."""
    record = decode_cache_record(dataset_dir)
    return Path(dataset_dir) / record["folder"] if record else None
