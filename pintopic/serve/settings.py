"""The service's settings: where it listens, who may call it, and the limits that keep it up under bad input and load.

The defaults are the ``[serve]`` section of :data:`pintopic.config.DEFAULTS` (one place for the config file,
the CLI and the app).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from pintopic.errors import PintopicError

_POSITIVE = ("port", "max_batch", "queue", "max_upload_bytes", "max_files", "max_pixels", "max_top_k", "retry_after_s")


@dataclass(frozen=True)
class ServeSettings:
    """Every knob of ``pintopic serve``; see ``DEFAULTS["serve"]`` for what each means."""

    host: str
    port: int
    models: tuple[str, ...]
    api_keys: str
    insecure: bool
    cors_origins: tuple[str, ...]
    workers: int
    max_batch: int
    max_wait_ms: float
    queue: int
    max_upload_bytes: int
    max_files: int
    max_pixels: int
    max_top_k: int
    retry_after_s: int

    @classmethod
    def from_mapping(cls, values: dict | None = None) -> ServeSettings:
        """The defaults overridden by ``values`` (a ``[serve]`` section or CLI options; None keeps a default)."""
        from pintopic.config import DEFAULTS
        from pintopic.imageio import DEFAULT_MAX_PIXELS

        values = {key: value for key, value in (values or {}).items() if value is not None}
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise PintopicError(f"unknown serve setting(s): {', '.join(unknown)}")
        chosen = {**DEFAULTS["serve"], **values}
        for key in ("cors_origins", "models"):
            items = chosen[key].split(",") if isinstance(chosen[key], str) else chosen[key]
            chosen[key] = tuple(str(item).strip() for item in items if str(item).strip())
        chosen["max_pixels"] = int(chosen["max_pixels"]) or DEFAULT_MAX_PIXELS
        for key in _POSITIVE:
            if int(chosen[key]) < 1:
                raise PintopicError(f"serve setting {key} must be at least 1, got {chosen[key]!r}")
        if int(chosen["queue"]) < int(chosen["max_files"]):
            raise PintopicError(f"serve setting queue ({chosen['queue']}) must be at least max_files ({chosen['max_files']}), "
                                "or a request of max_files images could never be admitted")
        if float(chosen["max_wait_ms"]) < 0 or int(chosen["workers"]) < 0:
            raise PintopicError("serve settings max_wait_ms and workers cannot be negative")
        return cls(**chosen)

    def decode_threads(self) -> int:
        """Threads that decode uploads (``workers``; 0 = one per usable core)."""
        from pintopic.environment import usable_cores

        return int(self.workers) or usable_cores()
