"""The images a ``predict`` call is about: files as given, folders replaced by the image files below them."""
from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


def expand_inputs(inputs) -> list[str]:
    """Files as given; folders replaced by their image files (recursively, sorted)."""
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(str(path))
    return files
