"""Dataset stage: scan a collection (crawl, folders, table), verify every image, sample per category, split.

Public API (imported on first use, so ``import pintopic.dataset`` stays cheap): :func:`ingest`,
:func:`make_crawl`, :func:`load_manifest`, :func:`load_sample`, :func:`image_file`, :func:`image_tasks`,
:func:`distribution_png`. Modules: ``layouts`` (scanners, auto-detection), ``verify`` (parallel
decode-verify), ``cleaning`` (statuses, duplicates, conflicts), ``sampling``, ``distribution``, ``ingest``
(the stage), ``manifest`` (reading its tables), ``split`` (train/test split and CV folds), ``makecrawl``.
The formats are documented in ``docs/data-format.md``.
"""
from __future__ import annotations

from pintopic.exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "ingest": "pintopic.dataset.ingestion",
    "make_crawl": "pintopic.dataset.makecrawl",
    "load_manifest": "pintopic.dataset.manifest",
    "load_sample": "pintopic.dataset.manifest",
    "image_file": "pintopic.dataset.manifest",
    "image_tasks": "pintopic.dataset.manifest",
    "ImageTask": "pintopic.dataset.manifest",
    "distribution_png": "pintopic.dataset.distribution",
})
