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
This module reads stores, finds them in a run, and writes shards; :mod:`pintopic.features.extraction` decides
what goes in them.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pintopic.errors import AlignmentError, PintopicError
from pintopic.runio import read_json
from pintopic.safeio import require_regular

#: Rows checked for non-finite values at a time (bounded memory on any store size).
FINITE_CHECK_ROWS = 4096


def non_finite_rows(block: np.ndarray) -> int:
    """How many rows of a (memory-mapped) block hold NaN or infinity, read in bounded chunks."""
    return sum(int((~np.isfinite(block[start:start + FINITE_CHECK_ROWS])).any(axis=1).sum())
               for start in range(0, block.shape[0], FINITE_CHECK_ROWS))


def load_block(part: Path) -> np.ndarray:
    """A shard's vectors, memory-mapped; a planted pipe or device is refused (ValueError) without being opened."""
    require_regular(part)
    return np.load(part, mmap_mode="r", allow_pickle=False)


def ids_checksum(ids: Sequence[str]) -> str:
    """sha256 of the ids joined by newlines, in row order."""
    digest = hashlib.sha256()
    for image_id in ids:
        digest.update(image_id.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def shard_name(kind: str, index: int) -> str:
    """File name of shard ``index``'s ``part`` (vectors), ``ids`` or ``failed`` file."""
    return {"part": f"part-{index:05d}.npy", "ids": f"ids-{index:05d}.parquet", "failed": f"failed-{index:05d}.json"}[kind]


def shard_paths(folder: Path) -> list[tuple[Path, Path]]:
    """``(part, ids)`` file pairs of every shard in a store folder, in shard order."""
    parts = sorted(Path(folder).glob("part-*.npy"))
    return [(part, part.parent / part.name.replace("part-", "ids-").replace(".npy", ".parquet")) for part in parts]


def read_ids(id_file: Path) -> list[str]:
    """The image ids of one shard, in row order; a missing or unreadable ids file is a clear error."""
    import pyarrow.parquet as pq

    try:
        require_regular(id_file)
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
    if not isinstance(meta, dict):
        raise PintopicError(f"feature store {folder}: meta.json is not a store description; rerun `pintopic extract`")
    all_ids: list[str] = []
    blocks = []
    for part, id_file in shard_paths(folder):
        try:
            block = load_block(part)
        except (OSError, ValueError) as error:
            raise PintopicError(f"feature store {folder}: {part.name} is unreadable ({error}); "
                                "rerun `pintopic extract` to rebuild it") from None
        shard_ids = read_ids(id_file)
        if block.ndim != 2 or len(shard_ids) != block.shape[0]:
            raise AlignmentError(f"{part.name} has shape {block.shape} but {id_file.name} lists {len(shard_ids)} ids")
        bad = non_finite_rows(block)
        if bad:
            raise PintopicError(f"feature store {folder}: {part.name} holds {bad} rows with NaN or infinite values "
                                "(damaged); rerun `pintopic extract` to repair it")
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


def try_read_ids(id_file: Path) -> list[str] | None:
    """:func:`read_ids`, or None when the file is missing or damaged (a shard to recompute)."""
    try:
        return read_ids(id_file)
    except AlignmentError:
        return None


def store_ids(folder: Path) -> list[str]:
    """The image ids a store holds (its id files only; the vectors are checked when loaded)."""
    ids: list[str] = []
    for _, id_file in shard_paths(folder):
        ids += read_ids(id_file)
    return ids


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
    from pintopic.runio import settings_hash

    settings = vector_settings(backbone, dtype=dtype, tta=tta, quantization=quantization)
    return f"{slug(backbone.spec.name)}-{settings_hash(settings, 8)}"


# -- finding stores in a run ---------------------------------------------------------------------------

def complete_stores(features_dir: str | Path) -> list[tuple[Path, dict]]:
    """``(folder, meta)`` of every complete store (one with a readable ``meta.json``), oldest meta.json first."""
    found = []
    for meta_path in sorted(Path(features_dir).glob("*/meta.json"), key=lambda p: (p.stat().st_mtime, p.parent.name)):
        try:
            meta = read_json(meta_path)
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict):
            found.append((meta_path.parent, meta))
    return found


def feature_store(run_dir: str | Path, backbone_spec: str, **settings) -> Path:
    """The newest complete store for a backbone (matching any given meta.json settings, e.g. ``dtype="float16"``)."""
    from pintopic.runio import run_paths

    candidates = [folder for folder, meta in complete_stores(run_paths(run_dir)["features"])
                  if meta.get("spec") == backbone_spec and all(meta.get(k) == v for k, v in settings.items())]
    if not candidates:
        raise PintopicError(f"no features for backbone {backbone_spec!r} in {run_dir}; "
                            f"run `pintopic extract {run_dir} --backbone {backbone_spec}`")
    return candidates[-1]


def list_stores(run_dir: str | Path) -> dict[str, Path]:
    """Complete stores of a run as ``{backbone spec: folder}`` (newest meta.json wins per spec)."""
    from pintopic.runio import run_paths

    return {meta["spec"]: folder for folder, meta in complete_stores(run_paths(run_dir)["features"]) if "spec" in meta}


# -- writing shards ------------------------------------------------------------------------------------

def finished_shard(folder: Path, index: int, planned: list[str], dim: int, dtype: str) -> bool:
    """True when shard ``index`` on disk holds exactly the planned ids (minus its recorded failures)."""
    part, ids_file, failed_file = (folder / shard_name(kind, index) for kind in ("part", "ids", "failed"))
    if not (part.exists() and ids_file.exists() and failed_file.exists()):
        return False
    ids = try_read_ids(ids_file)
    try:
        failed = {entry["image_id"] for entry in read_json(failed_file)}
        block = load_block(part)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if ids is None or block.shape != (len(ids), dim) or block.dtype != np.dtype(dtype) or non_finite_rows(block):
        return False
    return ids == [image_id for image_id in planned if image_id not in failed] and failed <= set(planned)


def stored_vectors(folder: Path, dim: int, dtype: str) -> dict[str, tuple[np.ndarray, int]]:
    """id -> (memory-mapped block, row) for every intact shard already in the folder.

    The maps keep the old files readable even after a new shard is renamed over them.
    """
    found: dict[str, tuple[np.ndarray, int]] = {}
    for part, ids_file in shard_paths(folder):
        ids = try_read_ids(ids_file)
        try:
            block = load_block(part)
        except (OSError, ValueError):
            continue
        if ids is None or block.shape != (len(ids), dim) or block.dtype != np.dtype(dtype):
            continue
        for row, image_id in enumerate(ids):
            if np.isfinite(block[row]).all():
                found[image_id] = (block, row)
    return found


def write_shard(folder: Path, index: int, ids: list[str], block: np.ndarray, failed: list[dict]) -> None:
    """Write shard ``index``: vectors, then failures, then ids (whose presence marks the shard finished)."""
    import pyarrow as pa

    from pintopic.runio import write_json, write_npy, write_parquet

    # The old ids file must not outlive the part it described: a kill in between would pair them.
    (folder / shard_name("ids", index)).unlink(missing_ok=True)
    write_npy(folder / shard_name("part", index), block)
    write_json(folder / shard_name("failed", index), sorted(failed, key=lambda entry: entry["image_id"]))
    write_parquet(folder / shard_name("ids", index), pa.table({"image_id": pa.array(ids, pa.string())}))


def remove_shards_from(folder: Path, first: int) -> None:
    """Delete shards ``first``, ``first + 1``, ... (left over from a larger, earlier sample)."""
    index = first
    while True:
        stale = [folder / shard_name(kind, index) for kind in ("part", "ids", "failed")]
        if not any(path.exists() for path in stale):
            return
        for path in stale:
            path.unlink(missing_ok=True)
        index += 1
