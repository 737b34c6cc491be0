"""The pixel cache: every sampled image's exact model input, decoded once for all backbones, before extraction.

``pintopic ingest --pixel-cache lite0,effnetv2_b0`` (and ``pintopic run``, right after ingest) writes, per distinct pixel geometry among those
backbones (input size, resize, crop, interpolation, JPEG draft rule; mean and std act inside the
network, so backbones differing only there share one cache), ``RUN/dataset/pixels/<H>x<W>-<key>/``:

* ``pixels.npy``: (N, 3, H, W) uint8, row ``i`` = the ``i``-th sampled image_id after timm's eval
  resize and centre crop, bit for bit what extraction computes from the same file (zeros for failures);
* ``rows.parquet``: ``image_id``, ``sha256`` (of the file the row was made from), ``status``, ``reason_detail``;
* ``meta.json``, written last (present = complete): geometry, preprocessing, decode-cache side, rows, checksums.

Each file is decoded once for every geometry (once per distinct JPEG draft scale), from the decode
cache copy when ingest kept one, exactly as extraction would. Extraction then reads the rows from
``pixels.npy`` in its main thread, with no decoding worker competing with the runtime for the cores; rows
the cache does not cover (or whose file's sha256 changed), and caches that do not check out, are
decoded as usual. Building resumes after a kill: ``pixels.partial.npy`` plus ``progress.json`` (rows
done, a prefix, and their failures). Disk cost: N x 3 x H x W bytes per geometry (150 KB per image at 224 x 224).
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pintopic.runio import (
    read_json,
    run_paths,
    settings_hash,
    write_json,
    write_parquet,
)
from pintopic.safeio import (
    DiskFullError,
    disk_full,
    ensure_free_space,
    free_bytes,
    is_disk_full,
    open_regular,
    require_regular,
)

PIXELS_FOLDER = "pixels"
FORMAT_VERSION = 1

#: ``pintopic run`` caches its backbones' inputs by default (``dataset.pixel_cache = "auto"``) up to this size,
#: when it extracts at least AUTO_MIN_BACKBONES backbones: in a first measurement (benchmarks/run_memory.py
#: --pixel-cache-pays; its JSON is not in benchmarks/results/ yet) the cache made ingest + extract of three Lite
#: backbones 1.14x faster, and of Lite0 alone 0.96x (decoding beside the runtime costs one backbone no more than
#: building the cache does).
AUTO_LIMIT_BYTES = 2 * 1024**3
AUTO_MIN_BACKBONES = 2
#: A cache is built only when this much disk stays free after it (else extract decodes; the run never fails for it).
DISK_RESERVE_BYTES = 1024**3

#: Images decoded per batch while building, and how often (in rows) progress is saved.
BUILD_BATCH = 32
SAVE_EVERY_ROWS = 512


def pixel_geometry(preprocessing) -> dict:
    """The preprocessing settings that change the uint8 pixels (mean and std are applied inside the network)."""
    return {key: value for key, value in preprocessing.to_dict().items() if key not in ("mean", "std")}


def decode_cache_side(dataset_dir: Path) -> int | None:
    """The decode cache side ingest used (it decides which file extraction decodes), or None without one."""
    from pintopic.dataset.decode_cache import decode_cache_record

    return (decode_cache_record(dataset_dir) or {}).get("side")


def cache_folder(dataset_dir: str | os.PathLike, preprocessing, side: int | None) -> Path:
    """Where the pixel cache of this geometry (made from this decode cache) lives."""
    key = settings_hash({"version": FORMAT_VERSION, "geometry": pixel_geometry(preprocessing), "decode_cache_side": side}, 10)
    height, width = preprocessing.input_size[1:]
    return Path(dataset_dir) / PIXELS_FOLDER / f"{height}x{width}-{key}"


def rows_checksum(image_ids: Sequence[str], sha256s: Sequence[str | None]) -> str:
    """sha256 over the (image_id, file sha256) pairs in row order: a cache matches a sample's ids and contents."""
    digest = hashlib.sha256()
    for image_id, sha256 in zip(image_ids, sha256s):
        digest.update(f"{image_id} {sha256}\n".encode())
    return digest.hexdigest()


class PixelCache:
    """A complete pixel cache (its header checked through a memory map); :meth:`covers` says which tasks it may serve."""

    def __init__(self, folder: Path, meta: dict, pixels: np.ndarray, image_ids: list[str], sha256s: list, statuses: list):
        self.folder = folder
        self.meta = meta
        self.pixels = pixels
        # only decoded rows of known content: a failure is decoded again, so it keeps extraction's own status
        self.rows = {image_id: (row, sha256) for row, (image_id, sha256, status)
                     in enumerate(zip(image_ids, sha256s, statuses)) if status == "ok" and isinstance(sha256, str)}

    def covers(self, image_id: str, sha256: str | None) -> bool:
        """True when the cache holds this image made from the file with this content hash."""
        hit = self.rows.get(image_id)
        return hit is not None and hit[1] == sha256

    def get(self, image_ids: Sequence[str]) -> np.ndarray:
        """The (n, 3, H, W) uint8 pixels of these ids, read from the file into a fresh array.

        Plain reads rather than slices of the memory map: mapped pages that were read count as this
        process's resident memory until unmapped, so a long extraction's RSS would grow with the cache.
        """
        rows = [self.rows[image_id][0] for image_id in image_ids]
        out = np.empty((len(rows), *self.pixels.shape[1:]), dtype=np.uint8)
        row_bytes = out[0].nbytes if len(rows) else 0
        with open_regular(self.folder / "pixels.npy") as handle:
            start = 0
            while start < len(rows):  # one read per run of consecutive rows
                stop = start + 1
                while stop < len(rows) and rows[stop] == rows[stop - 1] + 1:
                    stop += 1
                handle.seek(self.pixels.offset + rows[start] * row_bytes)
                view = memoryview(out[start:stop]).cast("B")
                done = 0
                while done < len(view):
                    count = handle.readinto(view[done:])
                    if not count:
                        raise OSError(f"{self.folder / 'pixels.npy'} is shorter than its header says")
                    done += count
                start = stop
        return out


def load_cache(folder: Path, preprocessing) -> PixelCache | None:
    """The complete cache in ``folder`` for this geometry, or None when it is missing or does not check out."""
    import pyarrow.parquet as pq

    try:
        meta = read_json(folder / "meta.json")
        if meta.get("version") != FORMAT_VERSION or meta.get("geometry") != _jsonable(pixel_geometry(preprocessing)):
            return None
        for name in ("pixels.npy", "rows.parquet"):
            require_regular(folder / name)
        pixels = np.load(folder / "pixels.npy", mmap_mode="r", allow_pickle=False)
        table = pq.read_table(folder / "rows.parquet", columns=["image_id", "sha256", "status"]).to_pydict()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    image_ids, sha256s, statuses = table["image_id"], table["sha256"], table["status"]
    if (pixels.dtype != np.uint8 or pixels.shape != (meta.get("n_rows"), *preprocessing.input_size)
            or rows_checksum(image_ids, sha256s) != meta.get("rows_sha256")):
        return None
    return PixelCache(folder, meta, pixels, image_ids, sha256s, statuses)


def open_pixel_cache(run_dir: str | os.PathLike, preprocessing) -> PixelCache | None:
    """The run's pixel cache for this preprocessing, if ingest built one and it checks out."""
    dataset = run_paths(run_dir)["dataset"]
    folder = cache_folder(dataset, preprocessing, decode_cache_side(dataset))
    return load_cache(folder, preprocessing) if (folder / "meta.json").exists() else None


def _jsonable(value):
    """``value`` as it reads back from JSON (tuples become lists), for comparing with a meta.json."""
    import json

    return json.loads(json.dumps(value))


class MultiPreprocessor:
    """Callable ``path -> 1-D uint8 array``: the flattened crops of several preprocessings, from one decode.

    A JPEG is decoded once per distinct draft scale (:func:`pintopic.imageio.draft_scale`), any other
    file once, so every crop equals :class:`~pintopic.features.preprocess.ImagePreprocessor`'s exactly.
    """

    def __init__(self, preprocessings: Sequence):
        from pintopic.features.preprocess import ImagePreprocessor

        self.preprocessors = [ImagePreprocessor(p) for p in preprocessings]

    def _draft_groups(self, path) -> list[list[int]]:
        """Indices of the preprocessings that decode to identical images, grouped."""
        import warnings

        from PIL import Image

        from pintopic.imageio import draft_scale

        draft_sizes = [p.preprocessing.draft_size for p in self.preprocessors]
        groups: dict[int, list[int]] = {}
        try:
            with open_regular(path) as handle:  # a pipe swapped in for an image must not block
                if handle.read(2) == b"\xff\xd8":  # only JPEG decodes at a draft scale
                    handle.seek(0)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # the header only; load_rgb applies the pixel limit
                        with Image.open(handle, formats=["JPEG"]) as image:
                            width, height = image.size
                    for index, size in enumerate(draft_sizes):
                        groups.setdefault(draft_scale(width, height, size), []).append(index)
                    return list(groups.values())
        except Exception:  # noqa: BLE001 - load_rgb below gives a damaged file its proper status
            pass
        return [list(range(len(draft_sizes)))]

    def __call__(self, path) -> np.ndarray:
        from pintopic.imageio import load_rgb

        crops: list[np.ndarray | None] = [None] * len(self.preprocessors)
        for group in self._draft_groups(path):
            image = load_rgb(path, draft_size=self.preprocessors[group[0]].preprocessing.draft_size)
            for index in group:
                crops[index] = self.preprocessors[index].transform(image).ravel()
        return np.concatenate(crops)


def backbone_preprocessing(name: str, run_dir: str | os.PathLike | None = None):
    """The preprocessing of a backbone name (its random-weights model has the same data config)."""
    from pintopic.features.builder import build_backbone
    from pintopic.features.finetuned import qualify_backbone

    return build_backbone(qualify_backbone(name, run_dir), pretrained=False).preprocessing


class _PartialCache:
    """One cache being written: the partial memory map, the rows done so far (a prefix) and their failures."""

    def __init__(self, folder: Path, preprocessing, backbones: list[str], plan: dict):
        self.folder, self.preprocessing, self.backbones = folder, preprocessing, backbones
        self.plan = {**plan, "geometry": _jsonable(pixel_geometry(preprocessing))}
        self.shape = (plan["n_rows"], *preprocessing.input_size)
        self.row_size = int(np.prod(self.shape[1:]))
        self.partial = folder / "pixels.partial.npy"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "meta.json").unlink(missing_ok=True)  # incomplete from here until the new meta.json
        self.done, self.failed = 0, []
        self.fd = None
        self.offset = self._resumed_offset()
        if self.offset is None:
            (folder / "progress.json").unlink(missing_ok=True)
            try:
                pixels = np.lib.format.open_memmap(self.partial, mode="w+", dtype=np.uint8, shape=self.shape)
            except OSError as error:
                self.discard()
                if is_disk_full(error):
                    raise disk_full(folder, self.shape[0] * self.row_size) from None
                raise
            self.offset = pixels.offset
            del pixels
        # rows are written with pwrite, not through a memory map: written mapped pages count as this process's
        # resident memory until unmapped, so building a large cache would hold it all in RSS
        self.fd = os.open(self.partial, os.O_RDWR)
        self._reserve()

    def _resumed_offset(self) -> int | None:
        """The data offset of the partial file a killed build left for this plan (its progress restored), or None."""
        try:
            progress = read_json(self.folder / "progress.json")
            if progress.get("plan") == self.plan:
                require_regular(self.partial)
                pixels = np.load(self.partial, mmap_mode="r", allow_pickle=False)
                if pixels.shape == self.shape and pixels.dtype == np.uint8:
                    self.done, self.failed = int(progress["rows_done"]), list(progress["failed"])
                    return pixels.offset
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        return None

    def _reserve(self) -> None:
        """Allocate every block of the partial file now: a full disk is one clear error before any row is
        decoded, and the partial file is removed."""
        size = os.fstat(self.fd).st_size
        try:
            os.posix_fallocate(self.fd, 0, size)
        except OSError as error:
            if not is_disk_full(error):
                return  # a file system without fallocate: the free-space check before building has to do
            self.discard()
            raise disk_full(self.folder, size) from None

    def discard(self) -> None:
        """Delete the partial cache (after a failure that left it unusable, e.g. a full disk)."""
        self._close()
        self.partial.unlink(missing_ok=True)
        (self.folder / "progress.json").unlink(missing_ok=True)

    def _close(self) -> None:
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self):
        self._close()  # a build stopped midway: its progress is saved, the file stays

    def write(self, rows: np.ndarray, block: np.ndarray) -> None:
        """Write ``block`` (one flattened row per entry of the ascending ``rows``), one pwrite per run of consecutive rows."""
        start = 0
        while start < len(rows):
            stop = start + 1
            while stop < len(rows) and rows[stop] == rows[stop - 1] + 1:
                stop += 1
            try:
                os.pwrite(self.fd, np.ascontiguousarray(block[start:stop]).data,
                          self.offset + int(rows[start]) * self.row_size)
            except OSError as error:
                if is_disk_full(error):
                    raise disk_full(self.folder, self.shape[0] * self.row_size) from None
                raise
            start = stop

    def save_progress(self, rows_done: int) -> None:
        """Flush the pixels, then record the prefix of rows they hold."""
        os.fdatasync(self.fd)
        self.done = max(self.done, rows_done)
        write_json(self.folder / "progress.json", {"plan": self.plan, "rows_done": self.done, "failed": self.failed})

    def finish(self, tasks, seconds: float) -> dict:
        """Publish the cache: pixels.npy, rows.parquet, then meta.json; returns its summary."""
        import pyarrow as pa

        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None
        os.replace(self.partial, self.folder / "pixels.npy")
        failed = {entry["image_id"]: entry for entry in self.failed}
        write_parquet(self.folder / "rows.parquet", pa.table({
            "image_id": pa.array([t.image_id for t in tasks], pa.string()),
            "sha256": pa.array([t.sha256 for t in tasks], pa.string()),
            "status": pa.array([failed[t.image_id]["status"] if t.image_id in failed else "ok" for t in tasks], pa.string()),
            "reason_detail": pa.array([failed[t.image_id]["reason"] if t.image_id in failed else "" for t in tasks], pa.string()),
        }))
        meta = {
            "version": FORMAT_VERSION, "geometry": self.plan["geometry"], "preprocessing": self.preprocessing.to_dict(),
            "decode_cache_side": self.plan["decode_cache_side"], "n_rows": self.shape[0], "shape": list(self.shape),
            "dtype": "uint8", "rows_sha256": self.plan["rows_sha256"], "backbones": self.backbones,
            "failed": len(failed), "bytes": self.shape[0] * self.row_size, "seconds": round(seconds, 3),
        }
        write_json(self.folder / "meta.json", meta)
        (self.folder / "progress.json").unlink(missing_ok=True)
        return _summary(self.folder, meta, built=True)


def _summary(folder: Path, meta: dict, *, built: bool) -> dict:
    return {"folder": str(folder), "backbones": meta["backbones"], "shape": meta["shape"], "failed": meta["failed"],
            "bytes": meta["bytes"], "built": built, "seconds": meta["seconds"] if built else 0.0}


def build_pixel_caches(run_dir: str | os.PathLike, backbones: Sequence[str] | str, *, workers: int | None = None,
                       progress: bool = True, max_bytes: int | None = None, fallback: bool = False) -> list[dict]:
    """Write (or finish, or leave as is) the pixel cache of each distinct geometry among ``backbones``; print a line each.

    Reads the run's sample (``RUN/dataset/sample.parquet``, written by ingest) under the run lock. Builds nothing
    when the caches would exceed ``max_bytes`` (``pintopic run``'s "auto"). Short of disk, raises
    :class:`~pintopic.safeio.DiskFullError` before writing, or with ``fallback`` (``pintopic run``: the run never
    fails for its cache) builds nothing and says so: extract then decodes. A rerun whose caches are complete
    is answered from ``pixels/index.json`` without building any model. Returns one summary per geometry:
    folder, backbones, shape, failed, bytes, built, seconds.
    """
    from pintopic.dataset.manifest import image_tasks
    from pintopic.environment import usable_cores
    from pintopic.features.registry import backbone_names
    from pintopic.runio import RunLock

    names = backbone_names(backbones)
    dataset = run_paths(run_dir)["dataset"]
    with RunLock(run_dir):
        tasks = image_tasks(run_dir)
        if not tasks or not names:
            return []
        side = decode_cache_side(dataset)
        plan = {"version": FORMAT_VERSION, "n_rows": len(tasks), "decode_cache_side": side,
                "rows_sha256": rows_checksum([t.image_id for t in tasks], [t.sha256 for t in tasks])}
        summaries = _indexed_summaries(dataset, names, plan)
        if summaries is None:
            summaries = _build(run_dir, dataset, names, tasks, plan, max_bytes, fallback,
                               usable_cores() if workers is None else workers, progress)
    for summary in summaries:
        state = f"built in {summary['seconds']:.1f} s" if summary["built"] else "up to date"
        rows, _, height, width = summary["shape"]
        print(f"  pixel cache {', '.join(summary['backbones'])}: {rows:,} rows of {height}x{width}, "
              f"{summary['bytes'] / 1e6:,.0f} MB, {summary['failed']} failed, {state}", file=sys.stdout)
    return summaries


def _index_key() -> dict:
    """What a name's geometry depends on besides the name: the preprocessing rules of timm and of pintopic."""
    from pintopic.environment import library_versions

    return {"format": FORMAT_VERSION, "versions": library_versions(("pintopic", "timm", "open_clip_torch"))}


def _indexed_summaries(dataset: Path, names: list[str], plan: dict) -> list[dict] | None:
    """Summaries of complete caches covering every name for this sample, from the index alone; None if unsure."""
    try:
        index = read_json(Path(dataset) / PIXELS_FOLDER / "index.json")
        folders = {index["names"][name] for name in names}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if index.get("key") != _index_key():
        return None
    summaries = []
    for folder_name in sorted(folders):
        folder = Path(dataset) / PIXELS_FOLDER / folder_name
        try:
            meta = read_json(folder / "meta.json")
        except (OSError, ValueError):
            return None
        if (meta.get("version"), meta.get("rows_sha256"), meta.get("decode_cache_side")) != (
                FORMAT_VERSION, plan["rows_sha256"], plan["decode_cache_side"]) or not (folder / "pixels.npy").exists():
            return None
        summaries.append(_summary(folder, meta, built=False))
    return summaries


def _build(run_dir, dataset: Path, names: list[str], tasks, plan: dict, max_bytes: int | None, fallback: bool, workers: int,
           progress: bool) -> list[dict]:
    """Resolve each name's geometry (building its model), then write the caches that are not complete."""
    wanted: dict[Path, tuple] = {}
    for name in names:
        preprocessing = backbone_preprocessing(name, run_dir)
        folder = cache_folder(dataset, preprocessing, plan["decode_cache_side"])
        wanted.setdefault(folder, (preprocessing, []))[1].append(name)
    size = len(tasks) * sum(int(np.prod(p.input_size)) for p, _ in wanted.values())
    if max_bytes is not None and size > max_bytes:
        print(f"  pixel cache: not built ({size / 1e9:.1f} GB for {len(tasks):,} images would exceed "
              f"{max_bytes / 1e9:.1f} GB; extract decodes the images instead)", file=sys.stdout)
        return []
    summaries, todo = [], []
    for folder, (preprocessing, owners) in wanted.items():
        complete = load_cache(folder, preprocessing)
        if complete is not None and complete.meta.get("rows_sha256") == plan["rows_sha256"]:
            summaries.append(_summary(folder, complete.meta, built=False))
        else:
            todo.append((folder, preprocessing, owners))
    if todo and not _room_for(dataset, todo, len(tasks), fallback):
        return summaries
    jobs = []
    try:
        for folder, preprocessing, owners in todo:
            jobs.append(_PartialCache(folder, preprocessing, owners, plan))
        if jobs:
            started = time.perf_counter()
            _fill(jobs, tasks, workers, progress)
            summaries.extend(job.finish(tasks, time.perf_counter() - started) for job in jobs)
    except DiskFullError as error:
        for job in jobs:
            job.discard()
        if not fallback:
            raise
        print(f"  pixel cache: not built ({error}; extract decodes the images instead)", file=sys.stdout)
        return [summary for summary in summaries if not summary["built"]]
    if not any(name.startswith("finetuned:") for name in names):  # a fine-tune's geometry can change under its name
        _record_index(Path(dataset), {name: folder.name for folder, (_, owners) in wanted.items() for name in owners})
    return summaries


def _room_for(dataset: Path, todo: list[tuple], rows: int, fallback: bool) -> bool:
    """Whether the run's disk holds these caches (a killed build's partial file counts as written). Short of room:
    with ``fallback``, says so and answers False (extract then decodes; :data:`DISK_RESERVE_BYTES` must stay free);
    without, raises :class:`~pintopic.safeio.DiskFullError` with the sizes."""
    need = sum(max(0, rows * int(np.prod(preprocessing.input_size)) - _allocated(folder / "pixels.partial.npy"))
               for folder, preprocessing, _ in todo)
    if not fallback:
        ensure_free_space(dataset, need)
        return True
    try:
        free = free_bytes(dataset)
    except OSError:
        return True  # cannot tell: a full disk while writing still falls back
    if need + DISK_RESERVE_BYTES <= free:
        return True
    print(f"  pixel cache: not built ({need / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free on {dataset}, "
          f"{DISK_RESERVE_BYTES / 1e9:.1f} GB kept free; extract decodes the images instead)", file=sys.stdout)
    return False


def _allocated(path: Path) -> int:
    """Bytes already allocated on disk to a file (0 when absent)."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


def _record_index(dataset: Path, names: dict[str, str]) -> None:
    """Add ``{backbone name: cache folder}`` to ``pixels/index.json`` (kept while timm and pintopic stay the same)."""
    path = dataset / PIXELS_FOLDER / "index.json"
    try:
        index = read_json(path)
        known = index["names"] if index.get("key") == _index_key() else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        known = {}
    write_json(path, {"key": _index_key(), "names": {**known, **names}})


def _fill(jobs: list[_PartialCache], tasks, workers: int, progress: bool) -> None:
    """Decode every row some job still lacks, once, and write each job's crop of it."""
    from pintopic.features.decoding import decoded_batches

    start = min(job.done for job in jobs)
    todo = tasks[start:]
    batches = [range(first, min(first + BUILD_BATCH, len(todo))) for first in range(0, len(todo), BUILD_BATCH)]
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="img", desc="pixel cache", dynamic_ncols=True, file=sys.stderr)
    preprocessor = MultiPreprocessor([job.preprocessing for job in jobs])
    saved = start
    results = decoded_batches([t.decode_path for t in todo], preprocessor, batches, workers,
                              originals=[t.path for t in todo])
    for batch, (indices, arrays, failures) in zip(batches, results):
        rows = np.asarray(indices, dtype=np.int64) + start
        offset = 0
        for job in jobs:
            keep = rows >= job.done
            if keep.any():
                job.write(rows[keep], arrays[keep, offset:offset + job.row_size])
            job.failed.extend({"image_id": todo[index].image_id, "status": status, "reason": detail}
                              for index, status, detail in failures if start + index >= job.done)
            offset += job.row_size
        rows_done = start + batch.stop
        if rows_done - saved >= SAVE_EVERY_ROWS or rows_done == len(tasks):
            for job in jobs:
                job.save_progress(rows_done)
            saved = rows_done
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
