"""The feature store: fixed-size ``.npy`` shards in ``image_id`` order with aligned id files.

Layout of ``RUN/features/<key>/``::

    part-00000.npy      float32/float16 array (rows, dim)
    failed-00000.json   the shard's planned images that failed to decode: [{image_id, status, reason, path}]
    ids-00000.parquet   one column ``image_id``: the id of each row of the same-numbered part (written last
                        of the three, so its presence marks the shard finished)
    meta.json           spec, key, dim, dtype, n_rows, ids_sha256, shard_rows, preprocessing, runtime,
                        weights source and checksum, failed, versions, settings_hash ... written last

Shard ``i`` covers planned rows ``[i * shard_rows, (i + 1) * shard_rows)`` of the image_id-sorted sample,
less its failures. A store is complete when ``meta.json`` exists; readers check the ids against ``ids_sha256``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from pintopic.errors import AlignmentError, PintopicError
from pintopic.runio import read_json


def ids_checksum(ids: Sequence[str]) -> str:
    """sha256 of the ids joined by newlines, in row order."""
    digest = hashlib.sha256()
    for image_id in ids:
        digest.update(image_id.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def shard_paths(folder: Path) -> list[tuple[Path, Path]]:
    parts = sorted(folder.glob("part-*.npy"))
    return [(part, folder / part.name.replace("part-", "ids-").replace(".npy", ".parquet")) for part in parts]


def read_ids(id_file: Path) -> list[str]:
    """The image ids of one shard, in row order; a missing or unreadable ids file is a clear error."""
    import pyarrow.parquet as pq

    try:
        return pq.read_table(id_file, columns=["image_id"]).column("image_id").to_pylist()
    except (OSError, ValueError, KeyError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise AlignmentError(f"feature store {id_file.parent}: {id_file.name} is missing or unreadable ({error}); "
                             "rerun `pintopic extract` to rebuild it") from None


def load_features(folder: str | Path, ids: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load ``(ids, X)`` from a complete store; with ``ids``, return exactly those rows in that order.

    Raises :class:`AlignmentError` when the store's ids do not match its checksum, or when an asked-for
    id is missing, so rows can never be handed back misaligned.
    """
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        raise PintopicError(f"feature store {folder} is incomplete (no meta.json); rerun `pintopic extract`")
    meta = read_json(meta_path)
    all_ids: list[str] = []
    blocks = []
    for part, id_file in shard_paths(folder):
        try:
            block = np.load(part, allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise PintopicError(f"feature store {folder}: {part.name} is unreadable ({error}); "
                                "rerun `pintopic extract` to rebuild it") from None
        shard_ids = read_ids(id_file)
        if len(shard_ids) != block.shape[0]:
            raise AlignmentError(f"{part.name} has {block.shape[0]} rows but {id_file.name} lists {len(shard_ids)} ids")
        all_ids.extend(shard_ids)
        blocks.append(block)
    if ids_checksum(all_ids) != meta.get("ids_sha256") or len(all_ids) != meta.get("n_rows"):
        raise AlignmentError(f"feature store {folder}: ids do not match the checksum in meta.json (tampered or partial)")
    X = np.concatenate(blocks, axis=0) if blocks else np.zeros((0, int(meta.get("dim", 0))), dtype=np.float32)
    stored_ids = np.asarray(all_ids, dtype=object)
    if ids is None:
        return stored_ids, np.ascontiguousarray(X)
    position = {image_id: i for i, image_id in enumerate(all_ids)}
    missing = [image_id for image_id in ids if image_id not in position]
    if missing:
        raise AlignmentError(f"feature store {folder} lacks {len(missing)} requested ids (e.g. {missing[0]})")
    rows = np.fromiter((position[image_id] for image_id in ids), dtype=np.int64, count=len(ids))
    return np.asarray(list(ids), dtype=object), np.ascontiguousarray(X[rows])
