"""Decode-verify files in parallel worker processes: one read per file gives its SHA-256 and its pixels.

Every file is fully decoded through :func:`pintopic.imageio.load_rgb_from` (the same path later
stages take), so ``ok`` here means the features stage will decode it too. The pixel limit is checked
from the header first, so a 600-megapixel PNG is rejected without allocating its pixels.

Workers run in a :class:`concurrent.futures.ProcessPoolExecutor`, largest files first so no straggler
is left at the end. If a worker dies (a decoder crash, the kernel's OOM killer), the remaining files
are verified one at a time in a fresh single worker, and the file that kills it again gets the status
``truncated`` with a detail saying so: nothing crashes the run.
"""
from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import NamedTuple

from pintopic.dataset.decode_cache import write_cached
from pintopic.environment import usable_cores
from pintopic.imageio import DEFAULT_MAX_PIXELS, ImageError, load_rgb_from, status_of
from pintopic.safeio import UnreadableFileError, open_regular

#: Files up to this size are read once into memory (hash + decode from the same bytes).
IN_MEMORY_LIMIT = 64 * 1024 * 1024
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


def _verify_chunk(chunk: list[tuple[int, bytes]], max_pixels: int | None, cache_dir: str | None = None) -> list[tuple[int, Verified]]:
    return [(index, verify_file(path, max_pixels, cache_dir)) for index, path in chunk]


def _context():
    methods = multiprocessing.get_all_start_methods()
    # forkserver: workers fork from a clean server, never from a parent holding threads or CUDA state.
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def verify_files(paths: Sequence[bytes], *, max_pixels: int | None = DEFAULT_MAX_PIXELS, workers: int | None = None,
                 sizes: Sequence[int | None] | None = None, progress: bool = True, desc: str = "decoding",
                 cache_dir: str | os.PathLike | None = None) -> list[Verified]:
    """Verify ``paths`` (results in the same order) with ``workers`` processes (default: CPU count)."""
    cache_dir = None if cache_dir is None else os.fspath(cache_dir)
    from tqdm.auto import tqdm

    workers = usable_cores() if not workers else max(1, int(workers))
    results: list[Verified | None] = [None] * len(paths)
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress or not paths, file=sys.stderr,
               mininterval=0.5, dynamic_ncols=True)
    try:
        if workers == 1 or len(paths) <= 1:
            for index, path in enumerate(paths):
                results[index] = verify_file(path, max_pixels, cache_dir)
                bar.update(1)
            return results  # type: ignore[return-value]
        order = list(range(len(paths)))
        if sizes is not None:
            order.sort(key=lambda index: -(sizes[index] or 0))
        chunk_size = max(1, min(64, len(order) // (workers * 8) or 1))
        chunks = [[(index, paths[index]) for index in order[start:start + chunk_size]]
                  for start in range(0, len(order), chunk_size)]
        leftover = _run_pool(chunks, results, max_pixels, workers, bar, cache_dir)
        if leftover:
            print(f"warning: a decoding worker died; verifying the {len(leftover)} remaining files one at a time",
                  file=sys.stderr)
            _run_isolated(leftover, paths, results, max_pixels, bar, cache_dir)
    finally:
        bar.close()
    return results  # type: ignore[return-value]


def _run_pool(chunks, results, max_pixels, workers, bar, cache_dir=None) -> list[int]:
    """Run the chunks in a pool; return the indices left undone if the pool broke."""
    leftover: list[int] = []
    executor = ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=_context())
    try:
        futures = {executor.submit(_verify_chunk, chunk, max_pixels, cache_dir): chunk for chunk in chunks}
        for future in as_completed(futures):
            try:
                done = future.result()
            except BrokenProcessPool:
                leftover.extend(index for index, _ in futures[future])
                continue
            for index, verified in done:
                results[index] = verified
            bar.update(len(done))
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown(wait=True)
    return sorted(leftover)


def _run_isolated(indices, paths, results, max_pixels, bar, cache_dir=None) -> None:
    """One file at a time in a single worker; a file that kills the worker is marked and skipped."""
    executor = None
    try:
        for index in indices:
            if executor is None:
                executor = ProcessPoolExecutor(max_workers=1, mp_context=_context())
            try:
                results[index] = executor.submit(_verify_chunk, [(index, paths[index])], max_pixels, cache_dir).result()[0][1]
            except BrokenProcessPool:
                results[index] = Verified("truncated", "decoding crashed the worker process (out of memory or a decoder fault)",
                                          None, None, None)
                executor.shutdown(wait=False)
                executor = None
            bar.update(1)
    finally:
        if executor is not None:
            executor.shutdown(wait=True)
