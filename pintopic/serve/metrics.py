"""Prometheus metrics of one app (its own registry, so several apps in one process never mix counts):
requests by route and status, request latency, images by outcome, model batch sizes and times, queue lengths."""
from __future__ import annotations

import time

#: Batch-size buckets: powers of two up to any sensible ``max_batch``.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServiceMetrics:
    """The app's metrics; :meth:`middleware` counts every HTTP request, :meth:`text` renders the exposition format."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("pintopic_requests", "HTTP requests by route template, method and status code",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("pintopic_request_duration_seconds", "HTTP request latency by route template",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.images = Counter("pintopic_images", "Uploaded images by model and outcome (ok or the reason it failed)",
                              ["model", "outcome"], registry=self.registry)
        self.batch_size = Histogram("pintopic_batch_size", "Images per model batch (dynamic batching)",
                                    ["model"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("pintopic_batch_duration_seconds", "Seconds a model batch took",
                                       ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.rejected = Counter("pintopic_overload_rejections", "Requests answered 503 because a model's queue was full",
                                ["model"], registry=self.registry)
        self._queue = Gauge("pintopic_queue_length", "Images waiting for a model batch", ["model"], registry=self.registry)
        self._admitted = Gauge("pintopic_images_in_progress", "Images admitted and not yet answered (decoding, "
                               "waiting or in the model); at the queue limit new requests get 503", ["model"],
                               registry=self.registry)

    def watch_batcher(self, model: str, batcher) -> None:
        """Queue gauges read from ``batcher`` at scrape time; batch sizes and times recorded after each batch."""
        self._queue.labels(model).set_function(lambda: batcher.waiting)
        self._admitted.labels(model).set_function(lambda: batcher.admitted)

        def on_batch(size: int, seconds: float) -> None:
            self.batch_size.labels(model).observe(size)
            self.batch_seconds.labels(model).observe(seconds)

        batcher.on_batch = on_batch

    def text(self) -> tuple[bytes, str]:
        """``(body, content type)`` of ``GET /metrics``."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def middleware(self, app):
        """ASGI middleware recording each HTTP request's status and latency under its route template
        (``unmatched`` for unknown paths, so a scan cannot create unbounded label values)."""
        metrics = self

        async def record(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            started, status = time.perf_counter(), {"code": 500}

            async def send_and_note(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_and_note)
            finally:
                route = getattr(scope.get("route"), "path", None) or (
                    "/static" if scope.get("path", "").startswith("/static/") else "unmatched")
                metrics.requests.labels(route, scope.get("method", ""), str(status["code"])).inc()
                metrics.latency.labels(route).observe(time.perf_counter() - started)

        return record
