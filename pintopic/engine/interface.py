"""What a stage hands an engine, and what it gets back.

A stage plans its work as *batches*: dicts of equal-length numpy columns (Ray Data's batch format). An
engine runs a CPU :class:`Step` on every batch, then, optionally, a model step (a class built once per
worker, e.g. one inference session per actor) and hands back ``(batch index, output batch)`` pairs, one per
input batch, a batch never split or merged, so results do not depend on the engine. Both engines run the
same step objects; they differ only in where the steps run.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class Step:
    """One step, run on whole batches.

    ``fn`` is a picklable callable ``batch -> batch`` (CPU tasks or worker processes) or, with ``stateful``, a
    class built once per worker as ``fn(*args)`` whose instance is called per batch (an actor pool). A batch's
    rows stay in order and in number. ``on_crash`` gives the output for a one-row batch whose worker process
    died on it twice (a decoder fault, the OOM killer); without it such a crash fails the run. ``task_rows``:
    rows a distributed engine hands one task (several whole planned batches; 0: one batch), large for cheap
    rows with small outputs, since every task costs a few milliseconds of scheduling.
    """

    fn: Callable
    args: tuple = ()
    stateful: bool = False
    on_crash: Callable[[Batch], Batch] | None = None
    task_rows: int = 0

    def build(self) -> Callable[[Batch], Batch]:
        """The callable that processes batches in this process."""
        return self.fn(*self.args) if self.stateful else self.fn


class Engine(Protocol):
    """Runs steps over batches; implemented by :mod:`pintopic.engine.local` and :mod:`pintopic.engine.ray`."""

    name: str

    def run(self, batches: Sequence[Batch], prepare: Step, model: Step | None = None, *,
            workers: int | None = None, ordered: bool = True) -> Iterator[tuple[int, Batch]]:
        """``(index, output)`` for every batch (in order, except after a crash; as they finish when not
        ``ordered``, for stages that place outputs by index); ``workers``: local processes."""

    def describe(self) -> dict:
        """What ran the work (recorded beside the outputs)."""


def rows(batch: Batch) -> int:
    """Number of rows of a batch."""
    return len(next(iter(batch.values()))) if batch else 0


def take(batch: Batch, index) -> Batch:
    """The rows ``index`` (a slice, a boolean mask or integer positions) of every column."""
    return {name: column[index] for name, column in batch.items()}


def concat(batches: Sequence[Batch]) -> Batch:
    """Batches with the same columns, one after the other."""
    return {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}

