"""Dynamic batching: images submitted concurrently for one model are run as one model batch.

A batch starts with the first waiting image and takes whatever else arrives within ``max_wait_ms``, up to
``max_batch``; while the model runs (in its own thread, off the event loop), the next batch gathers, so under
load batches fill up by themselves. Admission is bounded: at most ``capacity`` images per model are admitted
(decoding or waiting) at once, beyond that :class:`Overloaded` (the app answers 503 + Retry-After), so memory
stays bounded whatever the load.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


class Overloaded(Exception):
    """More images than the model's queue admits; try again shortly."""


@dataclass(frozen=True)
class BatchInfo:
    """How an item was run: the batch's size, the seconds it waited for the batch, and the model's seconds."""

    size: int
    waited: float
    seconds: float


class DynamicBatcher:
    """Runs ``run_batch(items) -> results`` (same length, same order) on batches of concurrently submitted items.

    Use from one event loop: :meth:`start`, then ``async with batcher.admit(n)`` around :meth:`submit` calls, then
    :meth:`stop`. ``on_batch(size, seconds)`` is called after every batch (metrics).
    """

    def __init__(self, run_batch: Callable[[list], Sequence[Any]], *, max_batch: int, max_wait_ms: float,
                 capacity: int, name: str = "model", on_batch: Callable[[int, float], None] | None = None):
        self.run_batch, self.max_batch, self.max_wait = run_batch, max(1, int(max_batch)), max(0.0, max_wait_ms) / 1000
        self.capacity, self.name, self.on_batch = max(1, int(capacity)), name, on_batch
        self.admitted = 0
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def waiting(self) -> int:
        """Images queued for the next batches."""
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.capacity)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"pintopic-batch-{self.name}")
        self._task = asyncio.get_running_loop().create_task(self._gather_and_run(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def admit(self, count: int) -> _Admission:
        """A context manager holding ``count`` places (all or none) until the request is done; raises :class:`Overloaded`."""
        if self.admitted + count > self.capacity:
            raise Overloaded(f"model {self.name!r} has {self.admitted} images in progress (queue {self.capacity})")
        self.admitted += count
        return _Admission(self, count)

    async def submit(self, item) -> tuple[Any, BatchInfo]:
        """Queue one admitted item and wait for its result and how its batch ran."""
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future, time.perf_counter()))  # never full: admission holds a place for it
        return await future

    async def _gather(self) -> list:
        """The next batch: the first waiting item, then what else comes within ``max_wait`` (up to ``max_batch``)."""
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except (asyncio.TimeoutError, TimeoutError):
                break
        return [entry for entry in batch if not entry[1].done()]  # a cancelled request's images are skipped

    async def _gather_and_run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, [item for item, _, _ in batch])
            except Exception as error:  # noqa: BLE001 - every waiting request gets the error, the loop goes on
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            seconds = time.perf_counter() - started
            for (_, future, queued), result in zip(batch, results):
                if not future.done():
                    future.set_result((result, BatchInfo(len(batch), started - queued, seconds)))
            if self.on_batch is not None:
                self.on_batch(len(batch), seconds)


class _Admission:
    def __init__(self, batcher: DynamicBatcher, count: int):
        self.batcher, self.count = batcher, count

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        self.batcher.admitted -= self.count
