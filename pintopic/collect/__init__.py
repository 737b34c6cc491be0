"""Collect stage (the study's phase 1): consenting users' boards and pins from Pinterest's API v5, as a crawl.

Public API (imported on first use): :func:`collect` (the stage, :mod:`pintopic.collect.collector`),
:func:`read_tokens`. Modules: ``tokens`` (the tokens file), ``client`` (HTTP errors, retries, the rate-limited
API client), ``api`` (v5 endpoints, pagination, pin media), ``downloader`` (allowed hosts, byte limit, content
check), ``store`` (crawl layout, resume state, summary, pin log), ``collector`` (the stage). The output is the
crawl layout of ``docs/data-format.md``; gallery-dl downloads are read by ``ingest`` directly.
"""
from __future__ import annotations

from pintopic.exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "collect": "pintopic.collect.collector",
    "read_tokens": "pintopic.collect.tokens",
})
