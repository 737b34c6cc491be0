"""Running the service: refuse an exposed address without keys, load and warm the models, then uvicorn."""
from __future__ import annotations

import ipaddress
import sys

from pintopic.errors import PintopicError


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public address


def check_exposure(settings) -> None:
    """Without API keys, only a loopback host, unless ``insecure`` says the caller means it."""
    if not settings.api_keys and not settings.insecure and not is_loopback(settings.host):
        raise PintopicError(f"refusing to listen on {settings.host} without API keys: anyone who can reach it could use "
                            "it. Give --api-keys FILE, or --insecure if the network is private, or use 127.0.0.1")


def build_service(folders, settings):
    """``(app, models)``: the app for model folders with ``settings``, every model loaded and warmed up (so a broken
    model or missing backbone fails here, as one clear error, not at the first request)."""
    from pintopic.serve.app import create_app
    from pintopic.serve.auth import ApiKeys
    from pintopic.serve.models import load_models

    check_exposure(settings)
    keys = ApiKeys.from_file(settings.api_keys) if settings.api_keys else None
    models = load_models(folders)
    for model in models.values():
        try:
            model.warm(settings.max_batch)
        except PintopicError:
            raise
        except Exception as error:  # noqa: BLE001 - reported as one line, the server does not start
            raise PintopicError(f"model {model.name} could not be warmed up: {error}") from None
    return create_app(models, settings, keys), models


def serve(folders, settings, *, log_level: str = "info") -> None:
    """Serve model folders until interrupted (uvicorn, one process; dynamic batching inside)."""
    import uvicorn

    app, models = build_service(folders, settings)
    for model in models.values():
        print(f"model {model.name}: {', '.join(model.backbone_names())}, {len(model.predictor.classes)} categories "
              f"(warmed up in {model.warm_seconds:.1f} s)", file=sys.stderr)
    keys = "API keys required" if settings.api_keys else "no API keys"
    print(f"serving on http://{settings.host}:{settings.port}/ ({keys}; API docs at /docs)", file=sys.stderr)
    connections = max(256, 4 * settings.queue * len(models))  # beyond this uvicorn answers 503 itself
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, limit_concurrency=connections,
                timeout_graceful_shutdown=5, server_header=False)
