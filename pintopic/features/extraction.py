"""The feature stage: every sampled image -> one vector per backbone, in resumable fixed-size shards.

Shard ``i`` holds the planned ids ``[i*shard_rows, (i+1)*shard_rows)`` of the image_id-sorted sample,
minus the files that failed to decode (listed in ``failed-i.json``). Files are written in the order
part, failed, ids, so a shard whose ids file matches the plan is finished and never recomputed; after a
kill, the rerun continues at the first unfinished shard. ``meta.json`` comes last and marks the store
complete. Vectors already in the folder (same key = same vector-changing settings) are reused by id
when the sample changes. Images whose exact model input is in the run's pixel cache
(:mod:`pintopic.features.pixel_cache`) are read from it instead of decoded; the rest are decoded. The work
runs on an engine (:mod:`pintopic.engine`): this machine (decoding worker processes beside the runtime) or
a Ray cluster (decoding tasks and an actor pool of runtimes), as the steps of :mod:`pintopic.features.steps`.
``precision="int8"`` runs the backbone as an INT8 graph calibrated on the run's training images
(:mod:`pintopic.features.quantize`); its store has its own key and records the graph and calibration ids in
``meta.json``.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pintopic.dataset.manifest import ImageTask, image_tasks
from pintopic.errors import PintopicError
from pintopic.features.store import (
    finished_shard,
    ids_checksum,
    remove_shards_from,
    shard_name,
    store_key,
    stored_vectors,
    try_read_ids,
    vector_settings,
    write_shard,
)
from pintopic.runio import RunLock, read_json, run_paths, settings_hash, write_json
from pintopic.safeio import ensure_free_space

DEFAULT_SHARD_ROWS = 1024
STORAGE_DTYPES = ("float32", "float16")
#: Compute precision of the backbone: its float32 graph, or an INT8 one (:mod:`pintopic.features.quantize`).
#: Separate from the storage dtype: INT8 features are stored as float32 (or float16) like any others.
PRECISIONS = ("fp32", "int8")
#: ``dtype="int8"`` (``--dtype int8``, ``features.dtype = "int8"``) is the user-facing name of INT8 extraction:
#: ``precision="int8"`` with the vectors stored as float32.
INT8_DTYPE = "int8"


class _Shards:
    """The shards of one store being (re)written: what each still needs, and the vectors computed so far."""

    def __init__(self, folder: Path, tasks: list[ImageTask], shard_rows: int, dim: int, dtype: str):
        self.folder, self.dim, self.dtype = folder, dim, dtype
        self.shards = [tasks[start:start + shard_rows] for start in range(0, len(tasks), shard_rows)] or [[]]
        self.todo = [i for i, shard in enumerate(self.shards)
                     if not finished_shard(folder, i, [t.image_id for t in shard], dim, dtype)]
        self.reusable: dict = {}
        self.computed: dict[int, dict[str, np.ndarray]] = {i: {} for i in self.todo}
        self.failures: dict[int, list[dict]] = {i: [] for i in self.todo}

    def reuse_stored_vectors(self) -> None:
        """Vectors of ids already in the folder's intact shards are copied, not recomputed."""
        self.reusable = stored_vectors(self.folder, self.dim, self.dtype)

    def to_compute(self, i: int) -> list[ImageTask]:
        return [t for t in self.shards[i] if t.image_id not in self.reusable]

    def add(self, i: int, tasks: list[ImageTask], output: dict) -> None:
        """Keep an engine output batch (:class:`~pintopic.features.steps.EmbedStep`'s) of shard ``i``'s ``tasks``."""
        for task, status, detail, vector in zip(tasks, output["status"], output["detail"], output["vector"]):
            vector = vector.astype(self.dtype) if status == "ok" else None
            if vector is not None and not np.isfinite(vector).all():
                # never stored: a store holds finite vectors only (a NaN row marks damage on disk)
                status, detail = "truncated", "the backbone gave NaN or infinite values for this image"
            if status == "ok":
                self.computed[i][task.image_id] = vector
            else:
                self.failures[i].append({"image_id": task.image_id, "status": str(status), "reason": str(detail),
                                         "path": task.path})

    def write(self, i: int) -> None:
        failed_ids = {entry["image_id"] for entry in self.failures[i]}
        ids = [t.image_id for t in self.shards[i] if t.image_id not in failed_ids]
        block = np.zeros((len(ids), self.dim), dtype=self.dtype)
        for row, image_id in enumerate(ids):
            if image_id in self.computed[i]:
                block[row] = self.computed[i][image_id]
            else:
                source, source_row = self.reusable[image_id]
                block[row] = source[source_row]
        write_shard(self.folder, i, ids, block, self.failures[i])
        self.computed[i].clear()

    def all_ids_and_failures(self) -> tuple[list[str], list[dict]]:
        ids, failed = [], []
        for i in range(len(self.shards)):
            ids.extend(try_read_ids(self.folder / shard_name("ids", i)) or [])
            failed.extend(read_json(self.folder / shard_name("failed", i)))
        return ids, failed


def _batch_plan(shards: _Shards, pixel_cache, batch_size: int) -> list[tuple[int, list[ImageTask], bool]]:
    """Batches in shard order, each inside one shard: ``(shard, tasks, cached)``, the pixel cache serving the
    cached ones, the others decoded. A resumed run plans a shard's batches exactly as a fresh one does."""
    plan = []
    for i in shards.todo:
        pending = shards.to_compute(i)
        served = [pixel_cache is not None and pixel_cache.covers(t.image_id, t.sha256) for t in pending]
        for cached in (True, False):
            chosen = [t for t, hit in zip(pending, served) if hit == cached]
            plan.extend((i, chosen[start:start + batch_size], cached) for start in range(0, len(chosen), batch_size))
    return plan


def _rows(tasks: list[ImageTask], cached: bool) -> dict:
    """One planned batch as the engine's columns (:class:`~pintopic.features.steps.DecodeStep`'s rows)."""
    return {"image_id": np.array([t.image_id for t in tasks], dtype=object),
            "path": np.array([os.fsencode(t.decode_path) for t in tasks], dtype=object),
            "original": np.array([os.fsencode(t.path) for t in tasks], dtype=object),
            "cached": np.full(len(tasks), cached)}


def _open_store(folder: Path, key: str, plan: dict, shards: _Shards) -> bool:
    """True when the store is complete and intact (nothing to do). Otherwise it is marked incomplete (its
    meta.json removed) and, unless a complete store's shards were damaged, stored vectors are reused by id."""
    meta_path = folder / "meta.json"
    damaged = False
    if meta_path.exists():
        try:
            meta = read_json(meta_path)
        except ValueError:
            meta = {}
        meta = meta if isinstance(meta, dict) else {}
        # a complete store is trusted only while every shard still checks out; a damaged one is repaired
        # from the images, since its id files can no longer be trusted to pair ids with vectors
        if meta.get("key") == key and all(meta.get(name) == value for name, value in plan.items()):
            if not shards.todo:
                return True
            damaged = True
        meta_path.unlink()
    if shards.todo and not damaged:
        shards.reuse_stored_vectors()
    return False


def _compute(run_dir: Path, spec: str, shards: _Shards, backbone, engine_settings, *, batch_size: int,
             workers: int | None, progress: bool, runner_settings: dict) -> dict:
    """Compute every missing vector on the engine (pixel cache first, then decoding), writing each shard as it
    completes; the engine is started only when there is something to compute."""
    from pintopic.engine.factory import open_engine
    from pintopic.engine.interface import Step
    from pintopic.features.decoding import default_workers
    from pintopic.features.pixel_cache import open_pixel_cache
    from pintopic.features.runtime import cpu_threads
    from pintopic.features.steps import DecodeStep, EmbedStep

    total = sum(len(shards.to_compute(i)) for i in shards.todo)
    rows = sum(len(shards.shards[i]) for i in shards.todo)
    ensure_free_space(shards.folder, rows * shards.dim * np.dtype(shards.dtype).itemsize)
    pixel_cache = open_pixel_cache(run_dir, backbone.preprocessing) if total else None
    plan = _batch_plan(shards, pixel_cache, batch_size)
    decoded = [t for _, tasks, cached in plan if not cached for t in tasks]
    workers = default_workers() if workers is None else workers
    if total and not decoded and engine_settings.kind == "local":
        # the pixel cache serves every row: read in this process, and each core runs its own single-threaded
        # ONNX Runtime session (measured ~10% faster under load; PyTorch runners ignore it)
        workers = 0
        if cpu_threads() > 1:
            runner_settings = {**runner_settings, "sessions": cpu_threads()}
    pending = {i: sum(1 for owner, _, _ in plan if owner == i) for i in shards.todo}
    for i in shards.todo:
        if pending[i] == 0:
            shards.write(i)
    bar = None
    if progress and total:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", desc=f"extract {spec}", dynamic_ncols=True)
    prepare = Step(DecodeStep([backbone.preprocessing], str(pixel_cache.folder) if pixel_cache is not None else None),
                   task_rows=4 * batch_size)
    model = Step(EmbedStep, (spec, runner_settings), stateful=True)
    engine = open_engine(engine_settings) if plan else None
    runner = None
    started = time.perf_counter()
    batches = [_rows(tasks, cached) for _, tasks, cached in plan]
    for index, output in engine.run(batches, prepare, model, workers=workers) if engine is not None else ():
        i, tasks, _ = plan[index]
        shards.add(i, tasks, output)
        runner = runner or json.loads(output["runner"][0])
        if bar is not None:
            bar.update(len(tasks))
        pending[i] -= 1
        if pending[i] == 0:
            shards.write(i)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    return {"workers": workers, "images_computed": total, "images_from_pixel_cache": total - len(decoded),
            "pixel_cache": pixel_cache.folder.name if pixel_cache is not None and total > len(decoded) else None,
            "images_from_decode_cache": sum(1 for t in decoded if t.read_from),
            "images_reused": sum(len(shards.shards[i]) - len(shards.to_compute(i)) for i in shards.todo),
            "seconds": round(seconds, 3), "images_per_second": round(total / seconds, 2) if total and seconds else None,
            "runner": runner, "engine": engine.describe() if engine is not None else None}


def extraction_request(spec: str, *, pretrained: bool, weights: str | None, dtype: str, tta: str | None,
                       calibration: dict | None = None) -> dict:
    """What was asked of a store, told without building the model: the name, where its weights come from, the
    storage type, the augmentation, and the versions whose preprocessing rules the store key depends on; for
    INT8, the calibration set and the quantizer's recipe."""
    from pintopic.environment import library_versions
    from pintopic.features.registry import weights_fingerprint

    request = {"spec": spec, "weights": weights_fingerprint(spec, pretrained, weights), "pretrained": bool(pretrained),
               "dtype": dtype, "tta": tta or None, "versions": library_versions(("pintopic", "timm", "open_clip_torch"))}
    if calibration is not None:
        from pintopic.features.quantize import recipe

        request.update(precision="int8", calibration=calibration["sha256"], quantizer=recipe())
    return request


def _finished_store(features_dir: Path, tasks: list[ImageTask], request: dict, plan: dict) -> Path | None:
    """A complete, intact store made for this same request and plan, found without building any model."""
    from pintopic.features.store import complete_stores

    for folder, meta in complete_stores(features_dir):
        if meta.get("request") != request or any(meta.get(name) != value for name, value in plan.items()):
            continue
        shards = _Shards(folder, tasks, plan["shard_rows"], int(meta.get("dim", 0)), str(meta.get("dtype")))
        if not shards.todo and meta.get("key") == folder.name:
            return folder
    return None


def _int8_graph(run_dir: Path, backbone, tasks: list[ImageTask], calibration: dict) -> tuple[Path, dict]:
    """The INT8 graph for this calibration set (quantized now unless cached) and its ``meta.json`` entry."""
    from pintopic.features.quantize import calibration_pixels, file_sha256, quantized_graph, recipe
    from pintopic.features.runtime import ORT_CHUNK

    chosen = set(calibration["ids"])
    images = [task for task in tasks if task.image_id in chosen]
    graph = quantized_graph(backbone, calibration,
                            lambda: calibration_pixels(run_dir, images, backbone.preprocessing, ORT_CHUNK))
    return graph, {**recipe(), "calibration": calibration, "graph": graph.name, "graph_sha256": file_sha256(graph)}


def _extract_one(run_dir: Path, spec: str, tasks: list[ImageTask], engine_settings, *, batch_size: int, workers: int | None,
                 device: str, dtype: str, pretrained: bool, weights: str | None, runtime: str, tta: str | None,
                 progress: bool, shard_rows: int, calibration: dict | None) -> Path:
    from pintopic.environment import library_versions, machine

    plan = {"requested_ids_sha256": ids_checksum([task.image_id for task in tasks]), "shard_rows": shard_rows}
    request = extraction_request(spec, pretrained=pretrained, weights=weights, dtype=dtype, tta=tta,
                                 calibration=calibration)
    finished = _finished_store(run_paths(run_dir)["features"], tasks, request, plan)
    if finished is not None:
        return finished
    runner_settings = {"pretrained": pretrained, "weights": weights, "runtime": runtime, "device": device, "tta": tta}
    quantization = None
    from pintopic.features.embed import built_backbone  # one build per process: quantizing and running share it

    if calibration:  # the INT8 graph is made (or found in the cache) here, from the FP32 model; runners load it
        _, quantization = _int8_graph(run_dir, built_backbone(spec, pretrained=pretrained, weights=weights), tasks,
                                      calibration)
        runner_settings["quantization"] = quantization
    if engine_settings.kind == "local":  # this process runs the model (its runner is made when there is work)
        backbone = built_backbone(spec, pretrained=pretrained, weights=weights)
    else:  # the workers run the model; the driver only names and plans the store (and stays light: no torch)
        from pintopic.features.builder import described_elsewhere

        backbone = described_elsewhere(spec, pretrained=pretrained, weights=weights)
    key = store_key(backbone, dtype=dtype, tta=tta, quantization=quantization)
    folder = run_paths(run_dir)["features"] / key
    folder.mkdir(parents=True, exist_ok=True)
    shards = _Shards(folder, tasks, shard_rows, backbone.dim, dtype)
    if _open_store(folder, key, plan, shards):
        _record_request(folder, request)
        return folder
    work = _compute(run_dir, spec, shards, backbone, engine_settings, batch_size=batch_size, workers=workers, progress=progress,
                    runner_settings=runner_settings)
    described = work.pop("runner") or _runner_here(engine_settings, spec, runner_settings)
    remove_shards_from(folder, len(shards.shards))
    all_ids, all_failed = shards.all_ids_and_failures()
    settings = vector_settings(backbone, dtype=dtype, tta=tta, quantization=quantization)
    meta = {
        **backbone.describe(), **plan, "key": key, "dtype": dtype, "precision": "int8" if quantization else "fp32",
        **({"quantization": quantization} if quantization else {}), "n_rows": len(all_ids),
        "ids_sha256": ids_checksum(all_ids), "n_shards": len(shards.shards),
        "preprocessing": backbone.preprocessing.to_dict(), "runtime": described["runtime"],
        "device": described["device"], "runtime_layout": described["layout"],
        "tta": tta or None, "failed": all_failed, "versions": library_versions(), "settings": settings,
        "settings_hash": settings_hash(settings), "batch_size": batch_size, **work, "machine": machine(),
        "request": request,
    }
    write_json(folder / "meta.json", meta)
    return folder


def _runner_here(engine_settings, spec: str, runner_settings: dict) -> dict:
    """The runner a local engine would use, described for a store whose vectors were all computed before (a resumed
    run); nothing for a distributed engine, whose workers' runners this process never sees."""
    if engine_settings.kind != "local":
        return {"runtime": None, "device": None, "layout": None}
    from pintopic.features.embed import prepared_backbone
    from pintopic.features.steps import describe_runner

    return describe_runner(prepared_backbone(spec, **runner_settings)[1])


def _record_request(folder: Path, request: dict) -> None:
    """Add the request to a complete store made before requests were recorded, so later reruns skip building."""
    meta = read_json(folder / "meta.json")
    if meta.get("request") != request:
        write_json(folder / "meta.json", {**meta, "request": request})


def extract(run_dir: str | os.PathLike, backbones: str | Sequence[str] = ("lite0",), *, batch_size: int = 32,
            workers: int | None = None, device: str = "auto", dtype: str = "float32", all_rows: bool = False,
            pretrained: bool = True, weights: str | None = None, runtime: str = "auto", tta: str | None = None,
            progress: bool = True, shard_rows: int = DEFAULT_SHARD_ROWS, engine=None, precision: str = "fp32",
            split: str | None = None, test_size: float | None = None, seed: int = 0) -> list[Path]:
    """Write ``RUN/features/<key>/`` for each backbone from the run's sample (or every ok row with ``all_rows``).

    Finished shards are kept, vectors of ids already stored under the same key are reused, and a
    complete store is left untouched. ``engine`` (:class:`~pintopic.engine.EngineSettings`; default: this
    machine, ``workers`` decoding processes) runs decoding and inference; it changes no vector beyond
    floating-point noise (< 1e-5). ``precision="int8"`` runs each backbone as an INT8 graph calibrated on
    training images of the run's split (``split``, ``test_size`` and ``seed`` make that split when the run has
    none yet; see :func:`pintopic.features.quantize.calibration_set`); an INT8 store sits beside the FP32 one.
    Backbones are built one at a time (each released before the next). Returns the store folders, one per backbone.
    """
    run_dir = Path(run_dir)
    from pintopic.features.registry import backbone_names

    names = backbone_names(backbones, run_dir)
    if not names:
        raise PintopicError("no backbone given")
    if weights and len(names) > 1:
        raise PintopicError("--weights applies to a single backbone; extract the others separately")
    if dtype == INT8_DTYPE:
        dtype, precision = "float32", "int8"
    if dtype not in STORAGE_DTYPES:
        raise PintopicError(f"unknown dtype {dtype!r}; use float32, float16 or int8")
    if precision not in PRECISIONS:
        raise PintopicError(f"unknown precision {precision!r}; use fp32 or int8")
    if precision == "int8" and (runtime == "torch" or device not in ("auto", "cpu")):
        raise PintopicError("--dtype int8 runs on ONNX Runtime on the CPU; use --runtime auto or onnx and "
                            "--device auto or cpu")
    if batch_size < 1 or shard_rows < 1:
        raise PintopicError("batch size and shard rows must be positive")
    tta = None if tta in (None, "none") else tta
    from pintopic.engine.settings import EngineSettings

    engine = engine or EngineSettings()
    folders = []
    with RunLock(run_dir):
        tasks = image_tasks(run_dir, all_rows)
        from pintopic.features.embed import release_backbones

        calibration = None
        if precision == "int8":
            from pintopic.features.quantize import calibration_set

            calibration = calibration_set(run_dir, tasks, split=split, test_size=test_size, seed=seed)
        for name in names:
            try:
                folders.append(_extract_one(
                    run_dir, name, tasks, engine, batch_size=batch_size, workers=workers, device=device, dtype=dtype,
                    pretrained=pretrained, weights=weights, runtime=runtime, tta=tta, progress=progress,
                    shard_rows=shard_rows, calibration=calibration))
            finally:  # one backbone's model and sessions in memory at a time
                release_backbones()
    return folders
