"""Opening the engine that settings name (kept apart from the interface, which both engines import)."""
from __future__ import annotations

from pintopic.engine.interface import Engine


def open_engine(settings=None) -> Engine:
    """The engine ``settings`` (an :class:`~pintopic.engine.settings.EngineSettings`; None: local) ask for; Ray is
    imported only for ``ray``."""
    from pintopic.engine.settings import EngineSettings

    settings = settings or EngineSettings()
    if settings.kind == "ray":
        from pintopic.engine.ray import RayEngine

        return RayEngine(settings)
    from pintopic.engine.local import LocalEngine

    return LocalEngine()
