"""Decode-verify files in parallel worker processes: one read per file gives its SHA-256 and its pixels.

Every file is fully decoded through :func:`pintopic.imageio.load_rgb_from` (the same path later
stages take), so ``ok`` here means the features stage will decode it too. The pixel limit is checked
from the header first, so a 600-megapixel PNG is rejected without allocating its pixels.

Files are verified on an engine (:mod:`pintopic.engine`: this machine's worker processes, or a Ray
cluster) in :func:`verification_order`: unusually large files first, so no straggler is left at the end, then
runs of consecutive files in a seeded shuffled order, so the rate (and the time left) holds steady when
folders differ in file size; results are taken as they finish and placed by position. If a worker dies (a
decoder crash, the kernel's OOM killer), the files it may have held are verified again one at a time, and the file that kills
its worker again gets the status ``truncated`` with a detail saying so: nothing crashes the run.
"""
from __future__ import annotations

import hashlib
import io
import os
import sys
from collections.abc import Sequence
from typing import NamedTuple

from pintopic.dataset.decode_cache import write_cached
from pintopic.environment import usable_cores
from pintopic.imageio import DEFAULT_MAX_PIXELS, ImageError, load_rgb_from, status_of
from pintopic.safeio import UnreadableFileError, open_regular

#: Files up to this size are read once into memory (hash + decode from the same bytes).
IN_MEMORY_LIMIT = 64 * 1024 * 1024
#: Files at least this many times the median size are verified first, largest first.
OUTLIER_FACTOR = 4
#: The rest go in runs of this many consecutive files (read close together), the runs in a shuffled order.
ORDER_RUN = 64
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class Verified(NamedTuple):
    """What decoding one file gave: a decode status, a detail, the content hash and the RGB size."""

    status: str
    detail: str
    sha256: str | None
    width: int | None
    height: int | None


def verify_file(path: bytes | str, max_pixels: int | None = DEFAULT_MAX_PIXELS, cache_dir: str | None = None) -> Verified:
    """Hash and fully decode one file (keeping a decode-cache copy in ``cache_dir`` if given); never raises for a bad file."""
    path = os.fsencode(path)
    try:
        handle = open_regular(path)
    except UnreadableFileError as error:
        problem = status_of(error)
        if error.kind == "missing":
            problem.detail = "the file disappeared during the scan"
        return Verified(problem.status, problem.detail, None, None, None)
    with handle:
        return _verify_open(handle, path, os.fstat(handle.fileno()), max_pixels, cache_dir)


def _verify_open(handle, path: bytes, info: os.stat_result, max_pixels: int | None, cache_dir: str | None) -> Verified:
    """:func:`verify_file` for an open regular file: hash, decode, keep a decode-cache copy."""
    if info.st_size == 0:
        return Verified("empty", "file has 0 bytes", _EMPTY_SHA256, None, None)
    digest = None
    try:
        if info.st_size <= IN_MEMORY_LIMIT:
            data = handle.read()
            digest = hashlib.sha256(data).hexdigest()
            head = data[:32]
            stream = io.BytesIO(data)
            del data
        else:
            hasher = hashlib.sha256()
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(chunk)
            digest = hasher.hexdigest()
            handle.seek(0)
            head = handle.read(32)
            handle.seek(0)
            stream = handle
        image = load_rgb_from(stream, name=os.fsdecode(path), max_pixels=max_pixels)
        width, height = image.size
        if cache_dir is not None:
            try:
                write_cached(image, head, cache_dir, digest)
            except OSError:  # the cache only saves time; a full disk must not make the image bad
                pass
        del image
        return Verified("ok", "", digest, width, height)
    except ImageError as error:
        width, height = error.size or (None, None)
        return Verified(error.status, error.detail, digest, width, height)
    except OSError as error:
        return Verified("truncated", f"cannot be read: {error.strerror or error}", digest, None, None)


class VerifyStep:
    """Engine step: :func:`verify_file` on each row's ``path``; columns status, detail, sha256 ("" for none),
    width and height (-1 for none)."""

    def __init__(self, max_pixels: int | None, cache_dir: str | None):
        self.max_pixels, self.cache_dir = max_pixels, cache_dir

    def __call__(self, batch: dict) -> dict:
        return _columns([verify_file(path, self.max_pixels, self.cache_dir) for path in batch["path"]])

    @staticmethod
    def crashed(batch: dict) -> dict:
        """The status of files whose decoding killed the worker process twice."""
        return _columns([Verified("truncated", "decoding crashed the worker process (out of memory or a decoder fault)",
                                  None, None, None)] * len(batch["path"]))


def _columns(results: list[Verified]) -> dict:
    import numpy as np

    return {"status": np.array([r.status for r in results], dtype=object),
            "detail": np.array([r.detail for r in results], dtype=object),
            "sha256": np.array([r.sha256 or "" for r in results], dtype=object),
            "width": np.array([-1 if r.width is None else r.width for r in results], dtype=np.int64),
            "height": np.array([-1 if r.height is None else r.height for r in results], dtype=np.int64)}


def _verified(columns: dict) -> list[Verified]:
    return [Verified(str(status), str(detail), str(sha) or None, None if width < 0 else int(width),
                     None if height < 0 else int(height))
            for status, detail, sha, width, height in zip(columns["status"], columns["detail"], columns["sha256"],
                                                          columns["width"], columns["height"])]


def verification_order(sizes: Sequence[int | None], *, seed: int = 0) -> list[int]:
    """Positions in the order to verify: files of ``OUTLIER_FACTOR`` x the median size or more first, largest
    first (none is left running alone at the end), then the rest in runs of ``ORDER_RUN`` consecutive listed
    files, the runs in an order shuffled by ``seed``: each stretch of the work mixes every folder's files, so
    the rate holds when one folder's files are smaller than another's."""
    import numpy as np

    known = sorted(size for size in sizes if size)
    threshold = OUTLIER_FACTOR * known[len(known) // 2] if known else None
    large = [] if threshold is None else sorted(
        (index for index, size in enumerate(sizes) if (size or 0) >= threshold), key=lambda i: -sizes[i])
    chosen = set(large)
    rest = [index for index in range(len(sizes)) if index not in chosen]
    runs = [rest[start:start + ORDER_RUN] for start in range(0, len(rest), ORDER_RUN)]
    return large + [index for run in np.random.default_rng(seed).permutation(len(runs)) for index in runs[run]]


def verify_files(paths: Sequence[bytes], *, max_pixels: int | None = DEFAULT_MAX_PIXELS, workers: int | None = None,
                 sizes: Sequence[int | None] | None = None, progress: bool = True, desc: str = "decoding",
                 cache_dir: str | os.PathLike | None = None, engine=None) -> list[Verified]:
    """Verify ``paths`` (results in the same order) on ``engine`` (default: this machine, ``workers`` processes,
    default one per core; one worker runs in this process), in :func:`verification_order` of ``sizes``."""
    import numpy as np
    from tqdm.auto import tqdm

    from pintopic.engine.factory import open_engine
    from pintopic.engine.interface import Step

    cache_dir = None if cache_dir is None else os.fspath(cache_dir)
    engine = engine or open_engine()
    workers = usable_cores() if not workers else max(1, int(workers))
    order = verification_order(sizes) if sizes is not None else list(range(len(paths)))
    chunk_size = max(1, min(64, len(order) // (workers * 8) or 1))
    batches = [{"index": np.asarray(order[start:start + chunk_size], dtype=np.int64),
                "path": np.array([bytes(paths[i]) for i in order[start:start + chunk_size]], dtype=object)}
               for start in range(0, len(order), chunk_size)]
    step = Step(VerifyStep(max_pixels, cache_dir), on_crash=VerifyStep.crashed, task_rows=512)
    results: list[Verified | None] = [None] * len(paths)
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress or not paths, file=sys.stderr,
              mininterval=0.5, dynamic_ncols=True) as bar:
        for index, columns in engine.run(batches, step, workers=0 if workers == 1 else workers, ordered=False):
            for row, verified in zip(batches[index]["index"], _verified(columns)):
                results[row] = verified
            bar.update(len(batches[index]["index"]))
    return results  # type: ignore[return-value]
