"""Reading what ingest wrote: the manifest and sample tables, and the image tasks later stages run over.

``manifest.parquet`` has one row per file found; ``sample.parquet`` the sampled ``ok`` rows (same columns).
An :class:`ImageTask` is one sampled image as extraction, the pixel cache and fine-tuning see it: its id,
the file to open, the decode-cache copy to read instead (when ingest kept one) and its content hash.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pintopic.errors import PintopicError
from pintopic.runio import run_paths
from pintopic.safeio import UnreadableFileError, read_parquet_table


def manifest_schema():
    """Columns of the manifest and the sample: ``abspath`` holds the exact path bytes to open;
    ``file_size``/``mtime_ns`` let a rerun reuse a file's decode result when it did not change."""
    import pyarrow as pa

    return pa.schema([
        ("image_id", pa.string()), ("path", pa.string()), ("abspath", pa.binary()), ("user", pa.string()),
        ("board", pa.string()), ("pin", pa.string()), ("category", pa.string()), ("status", pa.string()),
        ("reason_detail", pa.string()), ("sha256", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
        ("file_size", pa.int64()), ("mtime_ns", pa.int64()),
    ])


def _read_table(run_dir: str | os.PathLike, name: str):
    path = run_paths(run_dir)["dataset"] / name
    if not path.exists():
        raise PintopicError(f"{path} not found; run `pintopic ingest SOURCE {run_dir}` first")
    try:
        frame = read_parquet_table(path)
    except UnreadableFileError as error:
        if error.kind != "unparseable":
            raise
        raise PintopicError(f"{path} is damaged ({error.reason}); rerun `pintopic ingest`") from None
    return frame.sort_values("image_id", kind="stable").reset_index(drop=True)


def load_manifest(run_dir: str | os.PathLike):
    """Every file found by ingest, one row each, as a pandas DataFrame sorted by ``image_id``."""
    return _read_table(run_dir, "manifest.parquet")


def load_sample(run_dir: str | os.PathLike):
    """The sampled ``ok`` rows (same columns as the manifest), sorted by ``image_id``."""
    return _read_table(run_dir, "sample.parquet")


def image_file(row) -> str:
    """The filesystem path to open for a manifest row (``abspath`` holds the exact path bytes)."""
    value = row["abspath"]
    return os.fsdecode(bytes(value)) if isinstance(value, (bytes, bytearray, memoryview)) else str(value)


@dataclass(frozen=True)
class ImageTask:
    """One image to process: its id, its file, the decode-cache copy to read instead (if ingest kept one), its sha256."""

    image_id: str
    path: str
    read_from: str | None = None
    sha256: str | None = None

    @property
    def decode_path(self) -> str:
        return self.read_from or self.path


def image_tasks(run_dir: str | os.PathLike, all_rows: bool = False) -> list[ImageTask]:
    """The run's sampled images (or every ``ok`` manifest row with ``all_rows``) as tasks, sorted by image_id."""
    from pintopic.dataset.decode_cache import decode_cache_folder, existing_copy

    frame = load_manifest(run_dir) if all_rows else load_sample(run_dir)
    if all_rows:
        frame = frame[frame["status"] == "ok"]
    cache = decode_cache_folder(run_paths(run_dir)["dataset"])
    tasks = []
    for image_id, abspath, sha256 in zip(frame["image_id"], frame["abspath"], frame["sha256"]):
        known = sha256 if isinstance(sha256, str) else None
        copy = existing_copy(cache, known)
        tasks.append(ImageTask(str(image_id), image_file({"abspath": abspath}), str(copy) if copy else None, known))
    tasks.sort(key=lambda task: task.image_id)
    ids = [task.image_id for task in tasks]
    if len(set(ids)) != len(ids):
        table = "manifest.parquet" if all_rows else "sample.parquet"
        raise PintopicError(f"{Path(run_dir) / 'dataset' / table} lists some image_id more than once; re-run ingest")
    return tasks
