"""``pintopic serve``: saved models as an HTTP service (upload a pin, get its category), with a web page.

Public API (imported on first use): :func:`create_app`, :func:`serve`, :func:`build_service`, :func:`load_models`,
:class:`ServeSettings`, :class:`DynamicBatcher`. Modules: ``settings`` (the knobs), ``models`` (which folders, loaded
and warmed), ``runinfo`` (a model's run results), ``batching`` (dynamic batching, bounded admission), ``limits``
(reading uploads within limits), ``auth`` (API keys), ``metrics`` (Prometheus), ``service`` (the prediction path),
``app`` (the FastAPI routes), ``server`` (exposure check, uvicorn), ``static/`` (the page).
"""
from __future__ import annotations

from pintopic.exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "create_app": "pintopic.serve.app",
    "serve": "pintopic.serve.server",
    "build_service": "pintopic.serve.server",
    "load_models": "pintopic.serve.models",
    "ServeSettings": "pintopic.serve.settings",
    "DynamicBatcher": "pintopic.serve.batching",
})
