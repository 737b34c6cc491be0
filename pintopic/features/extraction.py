"""The feature stage: every sampled image -> one vector per backbone, in resumable fixed-size shards.

Shard ``i`` holds the planned ids ``[i*shard_rows, (i+1)*shard_rows)`` of the image_id-sorted sample,
minus the files that failed to decode (listed in ``failed-i.json``). Files are written in the order
part, failed, ids, so a shard whose ids file matches the plan is finished and never recomputed; after a
kill, the rerun continues at the first unfinished shard. ``meta.json`` comes last and marks the store
complete. Vectors already in the folder (same key = same vector-changing settings) are reused by id
when the sample changes. Images whose exact model input ingest stored (:mod:`pintopic.dataset.pixel_cache`)
are read from that cache instead of decoded; the rest are decoded in worker processes.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from pintopic.errors import PintopicError
from pintopic.features.store import ids_checksum, shard_paths
from pintopic.runio import RunLock, read_json, run_paths, settings_hash, write_json, write_npy, write_parquet

DEFAULT_SHARD_ROWS = 1024
STORAGE_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class ImageTask:
    """One image to embed: its id, its file, the decode-cache copy to read instead (if ingest kept one), its sha256."""

    image_id: str
    path: str
    read_from: str | None = None
    sha256: str | None = None

    @property
    def decode_path(self) -> str:
        return self.read_from or self.path


# -- decoding in worker processes -------------------------------------------------------------------

class _DecodeDataset:
    """Map-style dataset for torch's DataLoader: index -> (index, uint8 CHW array or None, status, detail)."""

    def __init__(self, paths: Sequence[str], preprocessor, originals: Sequence[str] | None = None):
        self.paths = list(paths)
        self.preprocessor = preprocessor
        self.originals = list(originals) if originals is not None else self.paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        item = self._decode(self.paths[index], index)
        if item[2] != "ok" and self.originals[index] != self.paths[index]:  # a damaged cache copy: the original decides
            item = self._decode(self.originals[index], index)
        return item

    def _decode(self, path: str, index: int):
        from pintopic.imageio import ImageError

        try:
            return index, self.preprocessor(path), "ok", ""
        except ImageError as error:
            return index, None, error.status, error.detail
        except FileNotFoundError:
            return index, None, "missing_image", "file no longer exists"
        except OSError as error:
            return index, None, "truncated", f"cannot read: {error}"


def _collate(items):
    """Keep decoded arrays stacked and failures separate, without any per-item torch conversion."""
    ok = [(index, array) for index, array, status, _ in items if status == "ok"]
    failed = [(index, status, detail) for index, array, status, detail in items if status != "ok"]
    arrays = np.stack([array for _, array in ok]) if ok else None
    return [index for index, _ in ok], arrays, failed


def _collate_shared(items):
    """:func:`_collate` with the pixels in a torch tensor, which crosses processes via shared memory."""
    import torch

    indices, arrays, failed = _collate(items)
    return indices, None if arrays is None else torch.from_numpy(arrays), failed


def _worker_init(_worker_id: int) -> None:
    import torch

    torch.set_num_threads(1)


def default_workers() -> int:
    """Decoding processes: one per two cores beside the inference threads, at least one."""
    from pintopic.features.onnx_runtime import cpu_threads

    return max(1, min(8, cpu_threads() // 2))


def decoded_batches(paths: Sequence[str], preprocessor, batches: Iterable[Sequence[int]], workers: int,
                    originals: Sequence[str] | None = None):
    """Yield ``(indices, arrays, failures)`` per batch of path indices, decoded in ``workers`` processes.

    ``originals`` are tried when a path (a decode-cache copy) fails.
    """
    from torch.utils.data import DataLoader

    dataset = _DecodeDataset(paths, preprocessor, originals)
    batches = [list(batch) for batch in batches if len(batch)]
    if not batches:
        return
    if workers <= 0:
        for batch in batches:
            yield _collate([dataset[i] for i in batch])
        return
    loader = DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, collate_fn=_collate_shared, worker_init_fn=_worker_init,
        prefetch_factor=4, multiprocessing_context="fork" if os.name == "posix" else None)
    for indices, pixels, failed in loader:
        yield indices, None if pixels is None else pixels.numpy(), failed


# -- embedding ------------------------------------------------------------------------------------

_BACKBONE_CACHE: dict[tuple, tuple] = {}


def prepared_backbone(spec: str, *, pretrained: bool = True, weights: str | None = None, runtime: str = "auto",
                      device: str = "auto", tta: str | None = None, sessions: int = 1):
    """``(backbone, runner)`` built once per process and settings (predict calls this repeatedly).

    ``sessions`` > 1 gives an ONNX Runtime runner with that many single-threaded sessions (same backbone object).
    """
    from pintopic.features.onnx_runtime import make_runner
    from pintopic.features.registry import build_backbone

    cache_key = (spec, bool(pretrained), str(weights) if weights else None, runtime, device, tta, sessions)
    if cache_key not in _BACKBONE_CACHE:
        plain = _BACKBONE_CACHE.get(cache_key[:-1] + (1,))
        backbone = plain[0] if plain else build_backbone(spec, pretrained=pretrained, weights=weights)
        _BACKBONE_CACHE[cache_key] = (backbone, make_runner(backbone, runtime=runtime, device=device, tta=tta,
                                                            sessions=sessions))
    return _BACKBONE_CACHE[cache_key]


def embed_images(spec: str, paths: Sequence[str | os.PathLike], *, pretrained: bool = True, weights: str | None = None,
                 batch_size: int = 32, runtime: str = "auto", tta: str | None = None, device: str = "auto",
                 workers: int = 0):
    """Embed image files with the same decoding, preprocessing and runtime as :func:`extract`.

    Returns ``(X, errors)``: ``X`` has one float32 row per path (NaN rows for failures) and ``errors``
    lists ``(index, status, detail)`` for the paths that could not be decoded.
    """
    from pintopic.features.preprocess import ImagePreprocessor
    from pintopic.features.registry import fusion_components

    if fusion_components(spec):  # a+b+c: every component embeds the files (features.fusion)
        from pintopic.features.fusion import embed_fused

        return embed_fused(spec, paths, pretrained=pretrained, batch_size=batch_size, runtime=runtime, tta=tta,
                           device=device, workers=workers)
    backbone, runner = prepared_backbone(spec, pretrained=pretrained, weights=weights, runtime=runtime, device=device, tta=tta)
    paths = [os.fspath(path) for path in paths]
    X = np.full((len(paths), backbone.dim), np.nan, dtype=np.float32)
    errors: list[tuple[int, str, str]] = []
    batches = [range(start, min(start + batch_size, len(paths))) for start in range(0, len(paths), batch_size)]
    for indices, arrays, failures in decoded_batches(paths, ImagePreprocessor(backbone.preprocessing), batches, workers):
        errors.extend(failures)
        if indices:
            X[indices] = runner(arrays)
    return X, sorted(errors)


# -- the store ------------------------------------------------------------------------------------

def _shard_name(kind: str, index: int) -> str:
    return {"part": f"part-{index:05d}.npy", "ids": f"ids-{index:05d}.parquet", "failed": f"failed-{index:05d}.json"}[kind]


def _read_ids(path: Path) -> list[str] | None:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=["image_id"]).column("image_id").to_pylist()
    except (OSError, ValueError, KeyError):
        return None


def _finished_shard(folder: Path, index: int, planned: list[str], dim: int, dtype: str) -> bool:
    """True when shard ``index`` on disk holds exactly the planned ids (minus its recorded failures)."""
    part, ids_file, failed_file = (folder / _shard_name(kind, index) for kind in ("part", "ids", "failed"))
    if not (part.exists() and ids_file.exists() and failed_file.exists()):
        return False
    ids = _read_ids(ids_file)
    try:
        failed = {entry["image_id"] for entry in read_json(failed_file)}
        block = np.load(part, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if ids is None or block.shape != (len(ids), dim) or block.dtype != np.dtype(dtype):
        return False
    return ids == [image_id for image_id in planned if image_id not in failed] and failed <= set(planned)


def _reusable_vectors(folder: Path, dim: int, dtype: str) -> dict[str, tuple[np.ndarray, int]]:
    """id -> (memory-mapped block, row) for every intact shard already in the folder.

    The maps keep the old files readable even after a new shard is renamed over them.
    """
    found: dict[str, tuple[np.ndarray, int]] = {}
    for part, ids_file in shard_paths(folder):
        ids = _read_ids(ids_file) if ids_file.exists() else None
        try:
            block = np.load(part, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            continue
        if ids is None or block.shape != (len(ids), dim) or block.dtype != np.dtype(dtype):
            continue
        for row, image_id in enumerate(ids):
            found[image_id] = (block, row)
    return found


def _machine() -> dict:
    import platform

    from pintopic.features.onnx_runtime import cpu_threads

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cores_usable": cpu_threads()}


def _library_versions() -> dict:
    import importlib.metadata as metadata

    versions = {}
    for package in ("pintopic", "torch", "timm", "onnxruntime", "onnx", "numpy", "pillow", "open_clip_torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def vector_settings(backbone, *, dtype: str, tta: str | None) -> dict:
    """Everything that changes the stored vectors (and so the store key); the sample is not part of it."""
    return {
        "spec": backbone.spec.name, "model": backbone.spec.model, "pretrained": backbone.pretrained,
        "weights_sha256": backbone.weights_sha256, "preprocessing": backbone.preprocessing.to_dict(),
        "tta": tta or None, "dtype": dtype,
    }


def store_key(backbone, *, dtype: str = "float32", tta: str | None = None) -> str:
    """Folder name of a store: the backbone's slug plus a short hash of the vector-changing settings."""
    from pintopic.features.registry import slug

    return f"{slug(backbone.spec.name)}-{settings_hash(vector_settings(backbone, dtype=dtype, tta=tta), 8)}"


def list_stores(run_dir: str | os.PathLike) -> dict[str, Path]:
    """Complete stores of a run as ``{backbone spec: folder}`` (newest meta.json wins per spec)."""
    folders = sorted(run_paths(run_dir)["features"].glob("*/meta.json"), key=lambda p: p.stat().st_mtime)
    return {read_json(meta)["spec"]: meta.parent for meta in folders}


def feature_store(run_dir: str | os.PathLike, backbone_spec: str, **settings) -> Path:
    """The complete store for a backbone (matching any given meta.json settings, e.g. ``dtype="float16"``)."""
    candidates = []
    for meta_path in sorted(run_paths(run_dir)["features"].glob("*/meta.json"), key=lambda p: p.stat().st_mtime):
        meta = read_json(meta_path)
        if meta.get("spec") == backbone_spec and all(meta.get(k) == v for k, v in settings.items()):
            candidates.append(meta_path.parent)
    if not candidates:
        raise PintopicError(f"no features for backbone {backbone_spec!r} in {run_dir}; run `pintopic extract {run_dir} --backbone {backbone_spec}`")
    return candidates[-1]


def _decode_cache_folder(dataset: Path) -> Path | None:
    """The decode cache ingest wrote (dataset.json says so), or None."""
    try:
        settings = read_json(dataset / "dataset.json").get("decode_cache")
    except (OSError, ValueError):
        return None
    return dataset / settings["folder"] if isinstance(settings, dict) and settings.get("folder") else None


def _tasks(run_dir: Path, all_rows: bool) -> list[ImageTask]:
    from pintopic.dataset import image_file, load_manifest, load_sample
    from pintopic.dataset.decode_cache import cache_file

    dataset = run_paths(run_dir)["dataset"]
    table = "manifest.parquet" if all_rows else "sample.parquet"
    if not (dataset / table).exists():
        raise PintopicError(f"{dataset / table} not found; run `pintopic ingest SOURCE {run_dir}` first")
    frame = load_manifest(run_dir) if all_rows else load_sample(run_dir)
    if all_rows:
        frame = frame[frame["status"] == "ok"]
    cache = _decode_cache_folder(dataset)
    tasks = []
    for image_id, abspath, sha256 in zip(frame["image_id"], frame["abspath"], frame["sha256"]):
        copy = cache_file(cache, sha256) if cache is not None and isinstance(sha256, str) else None
        tasks.append(ImageTask(str(image_id), image_file({"abspath": abspath}),
                               str(copy) if copy is not None and copy.exists() else None,
                               sha256 if isinstance(sha256, str) else None))
    tasks.sort(key=lambda task: task.image_id)
    ids = [task.image_id for task in tasks]
    if len(set(ids)) != len(ids):
        raise PintopicError(f"{dataset / table} lists some image_id more than once; re-run ingest")
    return tasks


def _extract_one(run_dir: Path, spec: str, tasks: list[ImageTask], *, batch_size: int, workers: int, device: str,
                 dtype: str, pretrained: bool, weights: str | None, runtime: str, tta: str | None, progress: bool,
                 shard_rows: int) -> Path:
    import pyarrow as pa

    from pintopic.dataset.pixel_cache import open_pixel_cache
    from pintopic.features.onnx_runtime import cpu_threads
    from pintopic.features.preprocess import ImagePreprocessor

    backbone, runner = prepared_backbone(spec, pretrained=pretrained, weights=weights, runtime=runtime, device=device, tta=tta)
    key = store_key(backbone, dtype=dtype, tta=tta)
    folder = run_paths(run_dir)["features"] / key
    folder.mkdir(parents=True, exist_ok=True)
    planned_ids = [task.image_id for task in tasks]
    plan = {"requested_ids_sha256": ids_checksum(planned_ids), "shard_rows": shard_rows}
    meta_path = folder / "meta.json"
    shards = [tasks[start:start + shard_rows] for start in range(0, len(tasks), shard_rows)] or [[]]
    todo = [i for i, shard in enumerate(shards)
            if not _finished_shard(folder, i, [t.image_id for t in shard], backbone.dim, dtype)]
    damaged = False
    if meta_path.exists():
        try:
            meta = read_json(meta_path)
        except ValueError:
            meta = {}
        # a complete store is trusted only while every shard still checks out; a damaged one is repaired
        # from the images, since its id files can no longer be trusted to pair ids with vectors
        if meta.get("key") == key and all(meta.get(name) == value for name, value in plan.items()):
            if not todo:
                return folder
            damaged = True
        meta_path.unlink()  # the store is about to change: incomplete until the new meta.json
    reusable = _reusable_vectors(folder, backbone.dim, dtype) if todo and not damaged else {}
    to_compute = {i: [t for t in shards[i] if t.image_id not in reusable] for i in todo}

    # Rows the pixel cache holds are read from its file here; the rest are decoded in worker processes.
    pixel_cache = open_pixel_cache(run_dir, backbone.preprocessing) if any(to_compute[i] for i in todo) else None
    batch_plan: list[tuple[int, list[ImageTask] | None]] = []  # (shard, cached tasks) or (shard, None: next decoded batch)
    decode_tasks: list[ImageTask] = []
    decode_batches: list[range] = []
    for i in todo:
        served = [pixel_cache is not None and pixel_cache.covers(t.image_id, t.sha256) for t in to_compute[i]]
        cached = [t for t, hit in zip(to_compute[i], served) if hit]
        to_decode = [t for t, hit in zip(to_compute[i], served) if not hit]
        batch_plan.extend((i, cached[start:start + batch_size]) for start in range(0, len(cached), batch_size))
        for start in range(0, len(to_decode), batch_size):
            chunk = to_decode[start:start + batch_size]
            decode_batches.append(range(len(decode_tasks), len(decode_tasks) + len(chunk)))
            decode_tasks.extend(chunk)
            batch_plan.append((i, None))
    pending_batches = {i: sum(1 for owner, _ in batch_plan if owner == i) for i in todo}
    computed: dict[int, dict[str, np.ndarray]] = {i: {} for i in todo}
    failures: dict[int, list[dict]] = {i: [] for i in todo}
    total = sum(len(to_compute[i]) for i in todo)
    from_pixel_cache = total - len(decode_tasks)
    if from_pixel_cache and not decode_tasks and runner.name == "onnxruntime" and cpu_threads() > 1:
        # nothing to decode: every core runs its own single-threaded session (measured ~10% faster under load)
        _, runner = prepared_backbone(spec, pretrained=pretrained, weights=weights, runtime=runtime, device=device,
                                      tta=tta, sessions=cpu_threads())

    bar = None
    if progress and total:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", desc=f"extract {spec}", dynamic_ncols=True)

    def write_shard(i: int) -> None:
        shard = shards[i]
        failed = failures[i]
        failed_ids = {entry["image_id"] for entry in failed}
        ids = [t.image_id for t in shard if t.image_id not in failed_ids]
        block = np.zeros((len(ids), backbone.dim), dtype=dtype)
        for row, image_id in enumerate(ids):
            if image_id in computed[i]:
                block[row] = computed[i][image_id]
            else:
                source, source_row = reusable[image_id]
                block[row] = source[source_row]
        # The old ids file must not outlive the part it described: a kill in between would pair them.
        (folder / _shard_name("ids", i)).unlink(missing_ok=True)
        write_npy(folder / _shard_name("part", i), block)
        write_json(folder / _shard_name("failed", i), sorted(failed, key=lambda e: e["image_id"]))
        write_parquet(folder / _shard_name("ids", i), pa.table({"image_id": pa.array(ids, pa.string())}))
        computed[i].clear()

    for i in todo:
        if pending_batches[i] == 0:
            write_shard(i)
    workers = default_workers() if workers is None else workers
    started = time.perf_counter()
    decoded = decoded_batches([t.decode_path for t in decode_tasks], ImagePreprocessor(backbone.preprocessing),
                              decode_batches, workers, originals=[t.path for t in decode_tasks])
    for i, cached in batch_plan:
        if cached is not None:
            done, arrays = cached, pixel_cache.get([t.image_id for t in cached])
        else:
            indices, arrays, batch_failures = next(decoded)
            done = [decode_tasks[index] for index in indices]
            for index, status, detail in batch_failures:
                failures[i].append({"image_id": decode_tasks[index].image_id, "status": status, "reason": detail,
                                    "path": decode_tasks[index].path})
        if done:
            vectors = runner(arrays).astype(dtype, copy=False)
            for task, vector in zip(done, vectors):
                computed[i][task.image_id] = vector
        if bar is not None:
            bar.update(len(cached) if cached is not None else len(done) + len(batch_failures))
        pending_batches[i] -= 1
        if pending_batches[i] == 0:
            write_shard(i)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started

    for index in range(len(shards), 10**6):  # shards left over from a larger, earlier sample
        stale = [folder / _shard_name(kind, index) for kind in ("part", "ids", "failed")]
        if not any(path.exists() for path in stale):
            break
        for path in stale:
            path.unlink(missing_ok=True)

    all_ids, all_failed = [], []
    for i in range(len(shards)):
        all_ids.extend(_read_ids(folder / _shard_name("ids", i)) or [])
        all_failed.extend(read_json(folder / _shard_name("failed", i)))
    settings = vector_settings(backbone, dtype=dtype, tta=tta)
    meta = {
        **backbone.describe(), **plan, "key": key, "dtype": dtype, "n_rows": len(all_ids),
        "ids_sha256": ids_checksum(all_ids), "n_shards": len(shards), "preprocessing": backbone.preprocessing.to_dict(),
        "runtime": runner.name, "device": getattr(getattr(runner, "runner", runner), "device", "cpu"),
        "runtime_layout": getattr(getattr(runner, "runner", runner), "layout", None),
        "tta": tta or None, "failed": all_failed, "versions": _library_versions(), "settings": settings,
        "settings_hash": settings_hash(settings), "workers": workers, "batch_size": batch_size,
        "images_computed": total, "images_from_pixel_cache": from_pixel_cache,
        "pixel_cache": pixel_cache.folder.name if pixel_cache is not None and from_pixel_cache else None,
        "images_from_decode_cache": sum(1 for t in decode_tasks if t.read_from),
        "images_reused": sum(len(shards[i]) - len(to_compute[i]) for i in todo),
        "seconds": round(seconds, 3), "images_per_second": round(total / seconds, 2) if total and seconds else None,
        "machine": _machine(),
    }
    write_json(meta_path, meta)
    return folder


def _components_or_self(name: str) -> list[str]:
    """The backbones a name needs extracted: a fusion's components, or the name itself."""
    from pintopic.features.registry import fusion_components

    return fusion_components(name) or [name]


def extract(run_dir: str | os.PathLike, backbones: str | Sequence[str] = ("lite0",), *, batch_size: int = 32,
            workers: int | None = None, device: str = "auto", dtype: str = "float32", all_rows: bool = False,
            pretrained: bool = True, weights: str | None = None, runtime: str = "auto", tta: str | None = None,
            progress: bool = True, shard_rows: int = DEFAULT_SHARD_ROWS) -> list[Path]:
    """Write ``RUN/features/<key>/`` for each backbone from the run's sample (or every ok row with ``all_rows``).

    Finished shards are kept, vectors of ids already stored under the same key are reused, and a
    complete store is left untouched. Returns the store folders, one per backbone.
    """
    run_dir = Path(run_dir)
    names = [backbones] if isinstance(backbones, str) else list(backbones)
    names = [name.strip() for item in names for name in item.split(",") if name.strip()]
    names = list(dict.fromkeys(part for name in names for part in _components_or_self(name)))  # a+b -> a, b
    from pintopic.features.finetune import qualify_backbone

    names = [qualify_backbone(name, run_dir) for name in names]  # finetuned:<name> -> that run's weights folder
    if not names:
        raise PintopicError("no backbone given")
    if weights and len(names) > 1:
        raise PintopicError("--weights applies to a single backbone; extract the others separately")
    if dtype not in STORAGE_DTYPES:
        raise PintopicError(f"unknown dtype {dtype!r}; use float32 or float16")
    if batch_size < 1 or shard_rows < 1:
        raise PintopicError("batch size and shard rows must be positive")
    tta = None if tta in (None, "none") else tta
    folders = []
    with RunLock(run_dir):
        tasks = _tasks(run_dir, all_rows)
        for name in names:
            folders.append(_extract_one(
                run_dir, name, tasks, batch_size=batch_size, workers=workers, device=device, dtype=dtype,
                pretrained=pretrained, weights=weights, runtime=runtime, tta=tta, progress=progress,
                shard_rows=shard_rows))
    return folders
