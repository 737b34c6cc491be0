"""Engines that run the heavy stages' work: ``local`` (this machine) or ``ray`` (a Ray cluster, Ray Data).

An engine knows nothing about images or models: a stage hands it batches and the steps to run on them
(:class:`Step`) and gets the outputs back per batch. Public API (imported lazily, so Ray is imported only
when asked for): :class:`EngineSettings`, :class:`Step`, :func:`open_engine`. Modules: ``settings`` (which
engine, which cluster), ``interface`` (batches, steps, the engine protocol), ``factory`` (``open_engine``), ``local``, ``ray``.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "EngineSettings": "pintopic.engine.settings",
    "Step": "pintopic.engine.interface",
    "open_engine": "pintopic.engine.factory",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pintopic.engine' has no attribute {name!r}")
