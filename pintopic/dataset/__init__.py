"""Dataset stage: scan a collection (crawl, folders, table), verify every image, sample per category.

Public API: :func:`ingest`, :func:`make_crawl`, :func:`load_manifest`, :func:`load_sample`, :func:`image_file`,
:func:`distribution_png`. Modules: ``layouts`` (scanners, auto-detection), ``verify`` (parallel decode-verify),
``cleaning`` (statuses, duplicates, conflicts), ``sampling``, ``distribution``, ``ingest``, ``makecrawl``.
The formats are documented in ``docs/data-format.md``.
"""
from __future__ import annotations

import os
from pathlib import Path

from pintopic.dataset.distribution import distribution_png
from pintopic.dataset.ingest import ingest
from pintopic.dataset.makecrawl import make_crawl

__all__ = ["ingest", "make_crawl", "load_manifest", "load_sample", "image_file", "distribution_png"]


def load_manifest(run_dir: str | os.PathLike):
    """Every file found by ingest, one row each, as a pandas DataFrame sorted by ``image_id``."""
    import pandas as pd

    frame = pd.read_parquet(Path(run_dir) / "dataset" / "manifest.parquet")
    return frame.sort_values("image_id", kind="stable").reset_index(drop=True)


def load_sample(run_dir: str | os.PathLike):
    """The sampled ``ok`` rows (same columns as the manifest), sorted by ``image_id``."""
    import pandas as pd

    frame = pd.read_parquet(Path(run_dir) / "dataset" / "sample.parquet")
    return frame.sort_values("image_id", kind="stable").reset_index(drop=True)


def image_file(row) -> str:
    """The filesystem path to open for a manifest row (``abspath`` holds the exact path bytes)."""
    value = row["abspath"]
    return os.fsdecode(bytes(value)) if isinstance(value, (bytes, bytearray, memoryview)) else str(value)
