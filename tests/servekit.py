"""Helpers for the service tests: a fitted model run built in seconds, waiting for readiness, a real uvicorn
server on a free loopback port in a thread, multipart uploads."""
from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

#: Grids small enough for a run of a few dozen images.
SMALL_GRIDS = {"knn": {"k": [1]}, "logreg": {"C": [1.0]}}


def fitted_run(source: Path, run: Path, *, backbone: str, pretrained: bool,
               classifiers=("knn", "logreg", "ensemble"), cv: int = 3) -> Path:
    """ingest -> extract -> evaluate on a small folders dataset; returns ``RUN/results/models``."""
    from pintopic.classify import evaluate
    from pintopic.dataset import ingest
    from pintopic.features import extract

    ingest(source, run, layout="folders", progress=False, workers=1, decode_cache=False)
    extract(run, [backbone], pretrained=pretrained, batch_size=8, workers=0, progress=False)
    evaluate(run, classifiers=list(classifiers), grids=SMALL_GRIDS, cv=cv, progress=False)
    return run / "results" / "models"


def settings(**values):
    from pintopic.serve.settings import ServeSettings

    return ServeSettings.from_mapping(values)


def wait_ready(client, timeout: float = 120.0) -> dict:
    """Poll ``/readyz`` until every model is warm (the lifespan warms them in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("/readyz")
        if response.status_code == 200:
            return response.json()
        time.sleep(0.05)
    raise AssertionError(f"models not ready after {timeout} s: {response.json()}")


def files_of(*paths: Path, field: str = "images") -> list:
    """A multipart ``files=`` list for httpx / TestClient."""
    return [(field, (path.name, path.read_bytes(), "application/octet-stream")) for path in paths]


@contextlib.contextmanager
def live_server(app, timeout: float = 60.0):
    """Run ``app`` with uvicorn on 127.0.0.1 and a free port in a thread; yields the base URL; stops on exit."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("uvicorn did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
