"""Alignment: rows are joined by image_id, never by position, and damaged feature stores are refused.

A hypothesis property shuffles the source listing order, the manifest and sample rows, the shard order
and the rows inside each shard of the feature store: ``results.json`` stays the same apart from timings.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from conftest import make_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pintopic.classify import evaluate
from pintopic.dataset import ingest
from pintopic.errors import AlignmentError, PintopicError
from pintopic.features import extract
from pintopic.features.store import ids_checksum
from pintopic.runio import read_json, write_json, write_npy, write_parquet

FAST_GRIDS = {"knn": {"k": [1, 3]}, "lsvm": {"C": [1.0]}, "nn": {"batch_size": [32]}}
SHARD_ROWS = 5


def _evaluate(run: Path) -> dict:
    return evaluate(run, grids=FAST_GRIDS, cv=3, n_jobs=1, progress=False)


def _without_timings(results: dict) -> dict:
    results = json.loads(json.dumps(results))
    for row in results["rows"]:
        row.pop("fit_seconds")
    return results


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A tiny folders source (with a duplicate, so listing order could matter), ingested, extracted, evaluated."""
    base = tmp_path_factory.mktemp("alignment")
    source = base / "source"
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    for c_index, (name, colour) in enumerate(colours.items()):
        for i in range(8):
            make_image(source / name / f"img_{i:02d}.png", color=colour, seed=c_index * 100 + i)
    shutil.copyfile(source / "red" / "img_03.png", source / "red" / "a_copy.png")  # a duplicate: which one stays ok?
    run = base / "run"
    ingest(source, run, workers=1, progress=False)
    extract(run, "timm:test_efficientnet", pretrained=False, workers=0, progress=False, batch_size=4, shard_rows=SHARD_ROWS)
    return source, run, _evaluate(run)


def _shuffled_store(store: Path, target: Path, rng: np.random.Generator) -> None:
    """Copy a feature store with its shards renumbered and the rows inside each shard permuted (vectors with their ids)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pintopic.features.store import shard_paths

    shards = shard_paths(store)
    order = rng.permutation(len(shards))
    all_ids = []
    for new_index, old_index in enumerate(order):
        part, id_file = shards[old_index]
        block = np.load(part)
        ids = pq.read_table(id_file).column("image_id").to_pylist()
        rows = rng.permutation(len(ids))
        write_npy(target / f"part-{new_index:05d}.npy", block[rows])
        write_parquet(target / f"ids-{new_index:05d}.parquet", pa.table({"image_id": [ids[i] for i in rows]}))
        all_ids += [ids[i] for i in rows]
    meta = read_json(store / "meta.json")
    write_json(target / "meta.json", {**meta, "ids_sha256": ids_checksum(all_ids)})


def _shuffle_rows(table_path: Path, rng: np.random.Generator) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(table_path)
    write_parquet(table_path, table.take(rng.permutation(table.num_rows)))


@pytest.mark.timeout(300)
@settings(max_examples=5, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_results_do_not_depend_on_listing_row_or_shard_order(extracted, seed):
    from pintopic.dataset import layouts

    source, run, reference = extracted
    rng = np.random.default_rng(seed)
    children = layouts._Walker.children

    def shuffled_children(self, directory):
        items = children(self, directory)
        rng.shuffle(items)
        return items

    with tempfile.TemporaryDirectory() as folder:
        shuffled = Path(folder) / "run"
        with mock.patch.object(layouts._Walker, "children", shuffled_children):
            ingest(source, shuffled, workers=1, progress=False)
        for name in ("manifest.parquet", "sample.parquet"):
            assert (shuffled / "dataset" / name).read_bytes() == (run / "dataset" / name).read_bytes(), name
            _shuffle_rows(shuffled / "dataset" / name, rng)
        (store,) = (run / "features").iterdir()
        _shuffled_store(store, shuffled / "features" / store.name, rng)
        results = _evaluate(shuffled)
        assert _without_timings(results) == _without_timings(reference)
        on_disk = read_json(shuffled / "results" / "results.json")
        assert _without_timings(on_disk) == _without_timings(read_json(run / "results" / "results.json"))


def _damaged_copy(run: Path, tmp_path: Path, damage) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run / "dataset", copy / "dataset")
    (store,) = (run / "features").iterdir()
    shutil.copytree(store, copy / "features" / store.name)
    damage(copy / "features" / store.name)
    return copy


def _swap_two_ids(store: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = pq.read_table(store / "ids-00001.parquet").column("image_id").to_pylist()
    ids[0], ids[1] = ids[1], ids[0]
    write_parquet(store / "ids-00001.parquet", pa.table({"image_id": ids}))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGES = {
    "two ids swapped": (_swap_two_ids, AlignmentError, "do not match the checksum"),
    "ids file garbage": (lambda store: (store / "ids-00002.parquet").write_bytes(b"not parquet"), PintopicError, "ids-00002"),
    "ids file missing": (lambda store: (store / "ids-00002.parquet").unlink(), PintopicError, "ids-00002"),
    "part truncated": (lambda store: _truncate(store / "part-00001.npy"), PintopicError, "part-00001"),
    "part with a row less": (lambda store: np.save(store / "part-00001.npy", np.load(store / "part-00001.npy")[1:]),
                             AlignmentError, "part-00001"),
    "meta.json missing": (lambda store: (store / "meta.json").unlink(), PintopicError, "no feature stores"),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_feature_store_is_refused_then_repaired_by_a_rerun(extracted, tmp_path, damage):
    from test_reliability_crash import assert_same_outputs

    _, run, _ = extracted
    damage_store, error_type, message = DAMAGES[damage]
    damaged = _damaged_copy(run, tmp_path, damage_store)
    with pytest.raises(error_type, match=message):
        evaluate(damaged, classifiers=["knn"], grids=FAST_GRIDS, cv=3, n_jobs=1, progress=False)
    assert not (damaged / "results" / "results.json").exists()
    (repaired,) = extract(damaged, "timm:test_efficientnet", pretrained=False, workers=0, progress=False, batch_size=4,
                          shard_rows=SHARD_ROWS)
    assert_same_outputs(repaired, next((run / "features").iterdir()))
