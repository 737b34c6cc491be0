"""Decoding images into model inputs in worker processes (torch's DataLoader), batch by batch.

A preprocessor is any picklable callable ``path -> uint8 array``; failures become ``(index, status, detail)``
entries, never exceptions, so one bad file costs only itself.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np


class DecodeDataset:
    """Map-style dataset for torch's DataLoader: index -> (index, uint8 array or None, status, detail).

    ``originals`` are decoded when a path (a decode-cache copy) fails: the original file decides.
    """

    def __init__(self, paths: Sequence[str], preprocessor, originals: Sequence[str] | None = None):
        self.paths = list(paths)
        self.preprocessor = preprocessor
        self.originals = list(originals) if originals is not None else self.paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        item = self._decode(self.paths[index], index)
        if item[2] != "ok" and self.originals[index] != self.paths[index]:
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


def collate(items):
    """Decoded arrays stacked, failures kept apart: ``(indices, arrays or None, [(index, status, detail)])``."""
    ok = [(index, array) for index, array, status, _ in items if status == "ok"]
    failed = [(index, status, detail) for index, array, status, detail in items if status != "ok"]
    arrays = np.stack([array for _, array in ok]) if ok else None
    return [index for index, _ in ok], arrays, failed


def _collate_shared(items):
    """:func:`collate` with the pixels in a torch tensor, which crosses processes via shared memory."""
    import torch

    indices, arrays, failed = collate(items)
    return indices, None if arrays is None else torch.from_numpy(arrays), failed


def _worker_init(_worker_id: int) -> None:
    import torch

    torch.set_num_threads(1)


def default_workers() -> int:
    """Decoding processes: one per two cores beside the inference threads, at least one."""
    from pintopic.environment import usable_cores

    return max(1, min(8, usable_cores() // 2))


def decoded_batches(paths: Sequence[str], preprocessor, batches: Iterable[Sequence[int]], workers: int,
                    originals: Sequence[str] | None = None):
    """Yield ``(indices, arrays, failures)`` per batch of path indices, decoded in ``workers`` processes
    (in this process when ``workers`` is 0); ``originals`` are tried when a path (a decode-cache copy) fails."""
    from torch.utils.data import DataLoader

    dataset = DecodeDataset(paths, preprocessor, originals)
    batches = [list(batch) for batch in batches if len(batch)]
    if not batches:
        return
    if workers <= 0:
        for batch in batches:
            yield collate([dataset[i] for i in batch])
        return
    loader = DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, collate_fn=_collate_shared, worker_init_fn=_worker_init,
        prefetch_factor=4, multiprocessing_context="fork" if os.name == "posix" else None)
    for indices, pixels, failed in loader:
        yield indices, None if pixels is None else pixels.numpy(), failed
