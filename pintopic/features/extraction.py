"""The feature stage: every sampled image -> one vector per backbone, in resumable fixed-size shards.

Shard ``i`` holds the planned ids ``[i*shard_rows, (i+1)*shard_rows)`` of the image_id-sorted sample,
minus the files that failed to decode (listed in ``failed-i.json``). Files are written in the order
part, failed, ids, so a shard whose ids file matches the plan is finished and never recomputed; after a
kill, the rerun continues at the first unfinished shard. ``meta.json`` comes last and marks the store
complete. Vectors already in the folder (same key = same vector-changing settings) are reused by id
when the sample changes. Images whose exact model input is in the run's pixel cache
(:mod:`pintopic.features.pixel_cache`) are read from it instead of decoded; the rest are decoded in
worker processes (:mod:`pintopic.features.decoding`). ``precision="int8"`` runs the backbone as an INT8 graph
calibrated on the run's training images (:mod:`pintopic.features.quantize`); its store has its own key and
records the graph and calibration ids in ``meta.json``.
"""
from __future__ import annotations

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
    stored_vectors,
    try_read_ids,
    write_shard,
)
from pintopic.runio import RunLock, read_json, run_paths, settings_hash, write_json

DEFAULT_SHARD_ROWS = 1024
STORAGE_DTYPES = ("float32", "float16")
#: Compute precision of the backbone: its float32 graph, or an INT8 one (:mod:`pintopic.features.quantize`).
#: Separate from the storage dtype: INT8 features are stored as float32 (or float16) like any others.
PRECISIONS = ("fp32", "int8")
#: ``dtype="int8"`` (``--dtype int8``, ``features.dtype = "int8"``) is the user-facing name of INT8 extraction:
#: ``precision="int8"`` with the vectors stored as float32.
INT8_DTYPE = "int8"


def vector_settings(backbone, *, dtype: str, tta: str | None, quantization: dict | None = None) -> dict:
    """Everything that changes the stored vectors (and so the store key); the sample is not part of it.

    An INT8 store adds its graph's checksum (which covers the calibration set); FP32 keys are as they always were."""
    settings = {
        "spec": backbone.spec.name, "model": backbone.spec.model, "pretrained": backbone.pretrained,
        "weights_sha256": backbone.weights_sha256, "preprocessing": backbone.preprocessing.to_dict(),
        "tta": tta or None, "dtype": dtype,
    }
    if quantization is not None:
        settings.update(precision="int8", graph_sha256=quantization["graph_sha256"])
    return settings


def store_key(backbone, *, dtype: str = "float32", tta: str | None = None, quantization: dict | None = None) -> str:
    """Folder name of a store: the backbone's slug plus a short hash of the vector-changing settings."""
    from pintopic.features.registry import slug

    settings = vector_settings(backbone, dtype=dtype, tta=tta, quantization=quantization)
    return f"{slug(backbone.spec.name)}-{settings_hash(settings, 8)}"


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


def _batch_plan(shards: _Shards, pixel_cache, batch_size: int):
    """Batches in shard order: ``(shard, cached tasks)`` read from the pixel cache, or ``(shard, None)`` for the
    next decoded batch; also the tasks to decode and their batches (indices into that list)."""
    plan: list[tuple[int, list[ImageTask] | None]] = []
    decode_tasks: list[ImageTask] = []
    decode_batches: list[range] = []
    for i in shards.todo:
        pending = shards.to_compute(i)
        served = [pixel_cache is not None and pixel_cache.covers(t.image_id, t.sha256) for t in pending]
        cached = [t for t, hit in zip(pending, served) if hit]
        to_decode = [t for t, hit in zip(pending, served) if not hit]
        plan.extend((i, cached[start:start + batch_size]) for start in range(0, len(cached), batch_size))
        for start in range(0, len(to_decode), batch_size):
            chunk = to_decode[start:start + batch_size]
            decode_batches.append(range(len(decode_tasks), len(decode_tasks) + len(chunk)))
            decode_tasks.extend(chunk)
            plan.append((i, None))
    return plan, decode_tasks, decode_batches


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


def _compute(run_dir: Path, spec: str, shards: _Shards, backbone, make_runner, *, batch_size: int,
             workers: int | None, progress: bool) -> dict:
    """Compute every missing vector (pixel cache first, then decoding workers), writing each shard as it completes.

    ``make_runner(sessions)`` builds the runner once the plan is known: with nothing to decode, every core runs
    its own single-threaded ONNX Runtime session (measured ~10% faster under load)."""
    from pintopic.features.decoding import decoded_batches, default_workers
    from pintopic.features.pixel_cache import open_pixel_cache
    from pintopic.features.preprocess import ImagePreprocessor
    from pintopic.features.runtime import cpu_threads

    total = sum(len(shards.to_compute(i)) for i in shards.todo)
    pixel_cache = open_pixel_cache(run_dir, backbone.preprocessing) if total else None
    plan, decode_tasks, decode_batches = _batch_plan(shards, pixel_cache, batch_size)
    pending = {i: sum(1 for owner, _ in plan if owner == i) for i in shards.todo}
    from_pixel_cache = total - len(decode_tasks)
    runner = make_runner(cpu_threads() if from_pixel_cache and not decode_tasks else 1)
    bar = None
    if progress and total:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", desc=f"extract {spec}", dynamic_ncols=True)
    for i in shards.todo:
        if pending[i] == 0:
            shards.write(i)
    workers = default_workers() if workers is None else workers
    started = time.perf_counter()
    decoded = decoded_batches([t.decode_path for t in decode_tasks], ImagePreprocessor(backbone.preprocessing),
                              decode_batches, workers, originals=[t.path for t in decode_tasks])
    for i, cached in plan:
        if cached is not None:
            done, arrays, failures = cached, pixel_cache.get([t.image_id for t in cached]), []
        else:
            indices, arrays, failures = next(decoded)
            done = [decode_tasks[index] for index in indices]
            shards.failures[i].extend({"image_id": decode_tasks[index].image_id, "status": status, "reason": detail,
                                       "path": decode_tasks[index].path} for index, status, detail in failures)
        if done:
            for task, vector in zip(done, runner(arrays).astype(shards.dtype, copy=False)):
                shards.computed[i][task.image_id] = vector
        if bar is not None:
            bar.update(len(done) + len(failures))
        pending[i] -= 1
        if pending[i] == 0:
            shards.write(i)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    return {"workers": workers, "images_computed": total, "images_from_pixel_cache": from_pixel_cache,
            "pixel_cache": pixel_cache.folder.name if pixel_cache is not None and from_pixel_cache else None,
            "images_from_decode_cache": sum(1 for t in decode_tasks if t.read_from),
            "images_reused": sum(len(shards.shards[i]) - len(shards.to_compute(i)) for i in shards.todo),
            "seconds": round(seconds, 3), "images_per_second": round(total / seconds, 2) if total and seconds else None,
            "runner": runner}


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


def _extract_one(run_dir: Path, spec: str, tasks: list[ImageTask], *, batch_size: int, workers: int | None,
                 device: str, dtype: str, pretrained: bool, weights: str | None, runtime: str, tta: str | None,
                 progress: bool, shard_rows: int, calibration: dict | None) -> Path:
    from pintopic.environment import library_versions, machine
    from pintopic.features.builder import build_backbone
    from pintopic.features.runtime import make_runner

    plan = {"requested_ids_sha256": ids_checksum([task.image_id for task in tasks]), "shard_rows": shard_rows}
    request = extraction_request(spec, pretrained=pretrained, weights=weights, dtype=dtype, tta=tta,
                                 calibration=calibration)
    finished = _finished_store(run_paths(run_dir)["features"], tasks, request, plan)
    if finished is not None:
        return finished
    # built for this store only (not kept for the process): one backbone's sessions at a time stay in memory
    backbone = build_backbone(spec, pretrained=pretrained, weights=weights)
    graph, quantization = _int8_graph(run_dir, backbone, tasks, calibration) if calibration else (None, None)
    key = store_key(backbone, dtype=dtype, tta=tta, quantization=quantization)
    folder = run_paths(run_dir)["features"] / key
    folder.mkdir(parents=True, exist_ok=True)
    shards = _Shards(folder, tasks, shard_rows, backbone.dim, dtype)
    if _open_store(folder, key, plan, shards):
        _record_request(folder, request)
        return folder
    work = _compute(run_dir, spec, shards, backbone,
                    lambda sessions: make_runner(backbone, runtime=runtime, device=device, tta=tta, sessions=sessions,
                                                 graph=graph),
                    batch_size=batch_size, workers=workers, progress=progress)
    runner = work.pop("runner")
    remove_shards_from(folder, len(shards.shards))
    all_ids, all_failed = shards.all_ids_and_failures()
    settings = vector_settings(backbone, dtype=dtype, tta=tta, quantization=quantization)
    layer = getattr(runner, "runner", runner)
    meta = {
        **backbone.describe(), **plan, "key": key, "dtype": dtype, "precision": "int8" if graph else "fp32",
        **({"quantization": quantization} if quantization else {}), "n_rows": len(all_ids),
        "ids_sha256": ids_checksum(all_ids), "n_shards": len(shards.shards),
        "preprocessing": backbone.preprocessing.to_dict(), "runtime": runner.name,
        "device": getattr(layer, "device", "cpu"), "runtime_layout": getattr(layer, "layout", None),
        "tta": tta or None, "failed": all_failed, "versions": library_versions(), "settings": settings,
        "settings_hash": settings_hash(settings), "batch_size": batch_size, **work, "machine": machine(),
        "request": request,
    }
    write_json(folder / "meta.json", meta)
    return folder


def _record_request(folder: Path, request: dict) -> None:
    """Add the request to a complete store made before requests were recorded, so later reruns skip building."""
    meta = read_json(folder / "meta.json")
    if meta.get("request") != request:
        write_json(folder / "meta.json", {**meta, "request": request})


def extract(run_dir: str | os.PathLike, backbones: str | Sequence[str] = ("lite0",), *, batch_size: int = 32,
            workers: int | None = None, device: str = "auto", dtype: str = "float32", all_rows: bool = False,
            pretrained: bool = True, weights: str | None = None, runtime: str = "auto", tta: str | None = None,
            progress: bool = True, shard_rows: int = DEFAULT_SHARD_ROWS, precision: str = "fp32",
            split: str | None = None, test_size: float | None = None, seed: int = 0) -> list[Path]:
    """Write ``RUN/features/<key>/`` for each backbone from the run's sample (or every ok row with ``all_rows``).

    Finished shards are kept, vectors of ids already stored under the same key are reused, and a
    complete store is left untouched. ``precision="int8"`` runs each backbone as an INT8 graph calibrated on
    training images of the run's split (``split``, ``test_size`` and ``seed`` make that split when the run has
    none yet; see :func:`pintopic.features.quantize.calibration_set`); an INT8 store sits beside the FP32 one.
    Returns the store folders, one per backbone.
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
    folders = []
    with RunLock(run_dir):
        tasks = image_tasks(run_dir, all_rows)
        calibration = None
        if precision == "int8":
            from pintopic.features.quantize import calibration_set

            calibration = calibration_set(run_dir, tasks, split=split, test_size=test_size, seed=seed)
        for name in names:
            folders.append(_extract_one(
                run_dir, name, tasks, batch_size=batch_size, workers=workers, device=device, dtype=dtype,
                pretrained=pretrained, weights=weights, runtime=runtime, tta=tta, progress=progress,
                shard_rows=shard_rows, calibration=calibration))
    return folders
