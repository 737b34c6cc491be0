"""The prediction path of the service: admit, decode off the event loop, batch, score, answer per image.

Each model has a :class:`~pintopic.serve.batching.DynamicBatcher` whose batches run through the model's
:class:`~pintopic.predict.predictor.Predictor` (``prepare`` in the decoding threads, ``embed_prepared`` +
``scores`` in the batch thread), the same code ``pintopic predict`` scores with.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from pintopic.serve.batching import DynamicBatcher, Overloaded

log = logging.getLogger("pintopic.serve")

#: The HTTP status of an image that cannot be used, by :mod:`pintopic.imageio` status.
IMAGE_STATUS_CODES = {"too_large": 413, "unsupported": 415}
UNREADABLE_CODE = 422

__all__ = ["Overloaded", "Service", "request_status"]


def _model_batch(predictor, items: list) -> list:
    """Scores of prepared images, one model run per backbone: ``[(scores row, score kind)]``."""
    scores, kind = predictor.scores(predictor.embed_prepared(items))
    return [(row, kind) for row in scores]


def request_status(images: list[dict]) -> int:
    """200 when any image was predicted; otherwise the images' common error code (422 when they differ)."""
    codes = {image["status"] for image in images}
    if 200 in codes:
        return 200
    return codes.pop() if len(codes) == 1 else UNREADABLE_CODE


class Service:
    """The served models with their batchers and the shared decoding threads; :meth:`lifespan` starts and stops them."""

    def __init__(self, models: dict, settings, metrics):
        self.models, self.settings, self.metrics = models, settings, metrics
        self.batchers = {
            name: DynamicBatcher(partial(_model_batch, model.predictor), max_batch=settings.max_batch,
                                 max_wait_ms=settings.max_wait_ms, capacity=settings.queue, name=name)
            for name, model in models.items()}
        for name, batcher in self.batchers.items():
            metrics.watch_batcher(name, batcher)
        self.decoders: ThreadPoolExecutor | None = None

    @property
    def ready(self) -> bool:
        return all(model.ready for model in self.models.values())

    @contextlib.asynccontextmanager
    async def lifespan(self, _app):
        """Start the batchers and the decoding threads, warm the models in the background (``/readyz``), then stop."""
        self.decoders = ThreadPoolExecutor(self.settings.decode_threads(), thread_name_prefix="pintopic-decode")
        for batcher in self.batchers.values():
            await batcher.start()
        warming = asyncio.create_task(asyncio.to_thread(self._warm_all))
        try:
            yield
        finally:
            warming.cancel()
            for batcher in self.batchers.values():
                await batcher.stop()
            self.decoders.shutdown(wait=False, cancel_futures=True)

    def _warm_all(self) -> None:
        """Warm the models one after the other (a no-op for those already warm)."""
        for model in self.models.values():
            try:
                model.warm(self.settings.max_batch)
                log.info("model %s ready (warmed up in %.1f s)", model.name, model.warm_seconds or 0.0)
            except Exception:  # any failure: the model's state says why; /readyz and predict report it
                log.exception("model %s failed to warm up", model.name)

    async def predict(self, name: str, uploads: list[tuple[str, object]], top_k: int) -> list[dict]:
        """One answer per ``(filename, binary stream)``, in order; raises :class:`Overloaded` when the model's queue
        has no room for all of them."""
        batcher = self.batchers[name]
        async with batcher.admit(len(uploads)):
            return list(await asyncio.gather(*(self._predict_one(name, filename, stream, top_k)
                                               for filename, stream in uploads)))

    async def _predict_one(self, name: str, filename: str, stream, top_k: int) -> dict:
        from pintopic.categories import display_name
        from pintopic.imageio import ImageError

        model, started = self.models[name], time.perf_counter()
        answer: dict = {"filename": filename}
        try:
            prepared = await asyncio.get_running_loop().run_in_executor(
                self.decoders, partial(model.predictor.prepare, stream, name=filename, max_pixels=self.settings.max_pixels))
        except ImageError as error:
            self.metrics.images.labels(name, error.status).inc()
            return {**answer, "status": IMAGE_STATUS_CODES.get(error.status, UNREADABLE_CODE), "reason": error.status,
                    "error": f"{error.status}: {error.detail}"}
        decoded = time.perf_counter()
        (scores, kind), batch = await self.batchers[name].submit(prepared)
        top = model.predictor.top(scores[None, :], top_k)[0]
        self.metrics.images.labels(name, "ok").inc()
        return {**answer, "status": 200, "score_kind": kind,
                "top": [{**entry, "display_name": display_name(entry["category"])} for entry in top],
                "timing_ms": {"decode": _ms(decoded - started), "queue": _ms(batch.waited), "model": _ms(batch.seconds),
                              "batch_size": batch.size, "total": _ms(time.perf_counter() - started)}}


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
