"""The Ray engine: the same steps as the local engine, as one Ray Data pipeline on a cluster.

Each planned batch becomes a block (``ray.data.from_arrow``); the CPU step runs as Ray tasks on any node
(retried when their worker dies), the model step in a fixed pool of actors (one model per actor, built
once; ``num_gpus=1`` each when the cluster has GPUs, else ``actor_threads`` inference threads each), and
the outputs stream back to the driver in order (or as they finish, for a stage that places them by
index). Scheduling, back-pressure and spilling are Ray Data's.
Steps see exactly the batches the stage planned (a ``_batch`` column keeps them apart if Ray merges
blocks), so the outputs equal the local engine's. Every node must read the stage's files at the same
paths (a shared file system) and run the same pintopic.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
import warnings
from collections.abc import Iterator, Sequence
from itertools import pairwise

import numpy as np

from pintopic.engine.interface import Batch, Step, concat, rows, take
from pintopic.engine.settings import EngineSettings, host_and_port
from pintopic.environment import CPUS_VARIABLE
from pintopic.errors import PintopicError

#: Times a CPU task is retried when its worker dies (a killed node, a decoder crash) before its batch is
#: given up (then run one row at a time on the driver's machine when the step has ``on_crash``).
TASK_RETRIES = 3
INSTALL_HINT = "pip install 'pintopic[ray]'"
_CONNECTED: dict[str, str] = {}


def connect(address: str):
    """The ``ray`` module, connected to the cluster at ``address`` (once per process); clear errors otherwise."""
    target = host_and_port(address)
    if (address == "local" or (target and _is_loopback(target[0]))) and "ray" not in sys.modules:
        # Ray replaces a loopback address by the machine's network one unless told that this node is
        # loopback-only; then every Ray process of this driver stays on 127.0.0.1 too
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        import ray.data  # the pipelines need Ray Data, not only Ray Core
    except ImportError:
        raise PintopicError(f"--engine ray needs Ray Data, which is not installed: {INSTALL_HINT}") from None
    if ray.is_initialized() and _CONNECTED.get("address") == address:
        return ray
    if target:
        _check_reachable(address, *target)
    if ray.is_initialized():
        ray.shutdown()
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # our progress bar says how far it is
    options = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address == "local":  # a private one-machine cluster, stopped when this process ends
        options.update(address="local", _node_ip_address="127.0.0.1", include_dashboard=False)
    else:
        options["address"] = address
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PintopicError(f"cannot connect to a Ray cluster at {address!r}: {first}") from None
    _CONNECTED["address"] = address
    return ray


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_reachable(address: str, host: str, port: int) -> None:
    """Fail in seconds, in one line, when nothing listens at the address (Ray itself would retry for minutes)."""
    try:
        with socket.create_connection((host, port), timeout=5):
            pass
    except OSError as error:
        raise PintopicError(f"cannot reach a Ray cluster at {address!r}: {error.strerror or error}; start one with "
                            "`ray start --head` or check --ray-address") from None


def _split(batch: Batch) -> Iterator[tuple[int, Batch]]:
    """The planned batches inside a block: runs of equal ``_batch`` values, without that column."""
    labels = batch["_batch"]
    if not len(labels):
        return
    edges = [0, *np.flatnonzero(labels[1:] != labels[:-1]) + 1, len(labels)]
    for start, stop in pairwise(edges):
        part = take(batch, slice(start, stop))
        yield int(part.pop("_batch")[0]), part


def _per_planned_batch(apply, batch: Batch) -> Batch:
    outputs = []
    for label, part in _split(batch):
        output = apply(part)
        output["_batch"] = np.full(rows(output), label, dtype=np.int64)
        outputs.append(output)
    return concat(outputs)


def _cpu_task(batch: Batch, step: Step) -> Batch:
    return _per_planned_batch(step.build(), batch)


class _Actor:
    """A model step in an actor: built once, then called per block."""

    def __init__(self, step: Step):
        self.apply = step.build()

    def __call__(self, batch: Batch) -> Batch:
        return _per_planned_batch(self.apply, batch)


class RayEngine:
    """Runs steps as a Ray Data pipeline on the cluster at ``settings.address`` (see the module docstring)."""

    name = "ray"

    def __init__(self, settings: EngineSettings):
        self.settings = settings
        self.ray = connect(settings.address)
        resources = self.ray.cluster_resources()
        self.cpus, self.gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
        self.nodes = sum(1 for node in self.ray.nodes() if node.get("Alive"))
        if settings.actors:
            self.actors = settings.actors
        elif self.gpus:
            self.actors = self.gpus
        else:
            self.actors = max(1, self.cpus // settings.actor_threads)

    def describe(self) -> dict:
        return {"kind": "ray", "address": self.settings.address, "nodes": self.nodes, "cpus": self.cpus,
                "gpus": self.gpus, "actors": self.actors, "actor_threads": self.settings.actor_threads,
                "ray": self.ray.__version__}

    def run(self, batches: Sequence[Batch], prepare: Step, model: Step | None = None, *,
            workers: int | None = None, ordered: bool = True) -> Iterator[tuple[int, Batch]]:
        """``(index, output)`` per batch, in order (as they finish when not ``ordered``); batches lost to repeated worker crashes come last (run
        one row at a time on this machine when ``prepare`` has ``on_crash``, else a clear error)."""
        if not batches:
            return
        dataset = self._pipeline(batches, prepare, model, ordered)
        expected = {index: rows(batch) for index, batch in enumerate(batches)}
        try:
            yield from self._collect(dataset, expected)
        except Exception as error:  # Ray raises its own types for task, actor and node failures
            if isinstance(error, PintopicError):
                raise
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise PintopicError(f"the Ray pipeline failed ({type(error).__name__}: {first}); finished work is kept, "
                                "rerun to resume") from None
        if expected:
            from pintopic.engine.local import run_isolated

            lost = sorted(expected)
            print(f"warning: Ray gave up on {len(lost)} batch(es) after their workers died; running their rows "
                  "one at a time here", file=sys.stderr)
            yield from zip(lost, run_isolated([batches[i] for i in lost], prepare))

    def _pipeline(self, batches: Sequence[Batch], prepare: Step, model: Step | None, ordered: bool):
        import pyarrow as pa
        import ray.data

        tables = [pa.table({**batch, "_batch": np.full(rows(batch), index, dtype=np.int64)})
                  for index, batch in enumerate(batches)]
        blocks, block, size = [], [], 0
        for table in tables:  # consecutive planned batches share a block (one task) up to prepare.task_rows rows
            if block and size + len(table) > prepare.task_rows:
                blocks.append(pa.concat_tables(block))
                block, size = [], 0
            block.append(table)
            size += len(table)
        blocks.append(pa.concat_tables(block))
        dataset = ray.data.from_arrow(blocks)
        with warnings.catch_warnings():
            # max_retries has no named parameter in the pinned Ray Data (2.60); without it a task whose worker
            # dies (a decoder crash) would be retried for ever
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset = dataset.map_batches(_cpu_task, fn_kwargs={"step": prepare}, batch_size=None, batch_format="numpy",
                                          num_cpus=1, max_retries=TASK_RETRIES)
        if model is not None:
            threads = 1 if self.gpus else self.settings.actor_threads
            dataset = dataset.map_batches(
                _Actor, fn_constructor_args=(model,), batch_size=None, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=self.actors), num_cpus=1, num_gpus=1 if self.gpus else None,
                runtime_env={"env_vars": {CPUS_VARIABLE: str(threads)}})
        context = dataset.context
        context.execution_options.preserve_order = ordered
        context.enable_progress_bars = False
        context.enable_auto_log_stats = False
        context.max_errored_blocks = -1 if prepare.on_crash is not None and model is None else 0
        return dataset

    def _collect(self, dataset, expected: dict[int, int]) -> Iterator[tuple[int, Batch]]:
        """Output blocks regrouped into the planned batches; ``expected`` keeps the ones still missing."""
        partial: dict[int, list[Batch]] = {}
        received: dict[int, int] = {}
        for block in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for label, part in _split(block):
                partial.setdefault(label, []).append(part)
                received[label] = received.get(label, 0) + rows(part)
                if received[label] == expected[label]:
                    del expected[label], received[label]
                    yield label, concat(partial.pop(label))
