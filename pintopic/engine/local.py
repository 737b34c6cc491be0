"""The local engine: the CPU step in this machine's worker processes, the model step in this process.

Workers come from a :class:`concurrent.futures.ProcessPoolExecutor`, forked as torch's DataLoader forks its
workers: they start at once with the parent's imports (a fresh interpreter would spend seconds importing
torch and timm) and run only the CPU step, never the parent's inference session. A process that is also a
Ray driver spawns them instead, since Ray does not support forking its drivers. At most ``PREFETCH``
batches per worker are in flight, so a slow model step holds back the workers instead of filling memory. If a worker dies (a decoder crash, the
kernel's OOM killer), the batches in flight are run again one row at a time in a fresh single worker; a row
that kills it again gets the step's ``on_crash`` output: nothing else is lost, and the run goes on.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from pintopic.engine.interface import Batch, Step, concat, rows, take
from pintopic.environment import usable_cores
from pintopic.errors import PintopicError
from pintopic.isolation import die_with_parent

#: Batches in flight per worker process.
PREFETCH = 4

_BUILT = None  # the step a worker process runs


def _ray_connected() -> bool:
    """Whether this process is a Ray driver (Ray's threads do not survive a fork: its next call would hang)."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(getattr(ray, "is_initialized", lambda: False)())


def _context():
    fork = "fork" in multiprocessing.get_all_start_methods() and not _ray_connected()
    return multiprocessing.get_context("fork" if fork else "spawn")


def _start_worker(step: Step, parent: int) -> None:
    # ended with its parent, even by SIGKILL: a forked worker would otherwise wait for work for ever
    # (its siblings hold the queue's pipe open) and keep its memory
    die_with_parent(parent)
    # one process per core: libraries that start thread pools (OpenMP, BLAS) keep one thread here
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"
    global _BUILT
    _BUILT = step.build()


def _call(batch: Batch) -> Batch:
    return _BUILT(batch)


def _pool(step: Step, workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=_context(), initializer=_start_worker,
                               initargs=(step, os.getpid()))


class LocalEngine:
    """Runs steps on this machine (see the module docstring)."""

    name = "local"

    def describe(self) -> dict:
        return {"kind": "local", "cores": usable_cores()}

    def run(self, batches: Sequence[Batch], prepare: Step, model: Step | None = None, *,
            workers: int | None = None, ordered: bool = True) -> Iterator[tuple[int, Batch]]:
        """``(index, output)`` per batch, in order or, when not ``ordered``, as the workers finish them;
        ``workers`` processes run ``prepare`` (0: this process; None: one per core), this process runs ``model``."""
        workers = usable_cores() if workers is None else max(0, int(workers))
        apply_model = model.build() if model is not None else None
        for index, prepared in self._prepared(batches, prepare, workers, ordered):
            yield index, apply_model(prepared) if apply_model is not None else prepared

    def _prepared(self, batches: Sequence[Batch], step: Step, workers: int, ordered: bool) -> Iterator[tuple[int, Batch]]:
        if workers == 0 or len(batches) <= 1:
            apply = step.build()
            for index, batch in enumerate(batches):
                yield index, apply(batch)
            return
        start = 0
        while start < len(batches):
            executor = _pool(step, min(workers, len(batches) - start))
            in_flight: deque = deque()
            try:
                while in_flight or start < len(batches):
                    while start < len(batches) and len(in_flight) < workers * PREFETCH:
                        in_flight.append((start, executor.submit(_call, batches[start])))
                        start += 1
                    index, future = in_flight[0] if ordered else _first_finished(in_flight)
                    try:
                        output = future.result()
                    except BrokenProcessPool:
                        lost = [index for index, _ in in_flight]
                        print(f"warning: a worker process died; running the {sum(rows(batches[i]) for i in lost)} rows "
                              "it may have held one at a time", file=sys.stderr)
                        executor.shutdown(wait=False, cancel_futures=True)
                        yield from zip(lost, run_isolated([batches[i] for i in lost], step))
                        break
                    in_flight.remove((index, future))
                    yield index, output
            finally:
                executor.shutdown(wait=False, cancel_futures=True)


def _first_finished(in_flight: deque) -> tuple:
    """The oldest ``(index, future)`` in flight whose future is done, waiting for one if none is."""
    wait([future for _, future in in_flight], return_when=FIRST_COMPLETED)
    return next(entry for entry in in_flight if entry[1].done())


def run_isolated(batches: Sequence[Batch], step: Step) -> Iterator[Batch]:
    """Each batch's rows one at a time in a single worker process; a row that kills it gets ``step.on_crash``."""
    executor = None
    try:
        for batch in batches:
            outputs = []
            for row in range(rows(batch)):
                single = take(batch, slice(row, row + 1))
                executor = executor or _pool(step, 1)
                try:
                    outputs.append(executor.submit(_call, single).result())
                except BrokenProcessPool:
                    executor.shutdown(wait=False)
                    executor = None
                    if step.on_crash is None:
                        raise PintopicError("a worker process died twice on the same input (a decoder crash or "
                                            "out of memory); finished work is kept, rerun to resume") from None
                    outputs.append(step.on_crash(single))
            yield concat(outputs) if outputs else batch
    finally:
        if executor is not None:
            executor.shutdown(wait=True)
