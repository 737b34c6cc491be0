"""Ingest on real collections: ../shared/data/natural-images and Debian's openclipart-png."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from pintopic.dataset import ingest, load_manifest, load_sample
from pintopic.imageio import DEFAULT_MAX_PIXELS
from pintopic.runio import read_json

pytestmark = pytest.mark.integration


def test_natural_images(natural_images: Path, tmp_path: Path):
    record = ingest(natural_images, tmp_path / "a", per_category=50, seed=0, workers=2, progress=False)
    manifest = load_manifest(tmp_path / "a")
    assert len(manifest) == 6899
    assert manifest["category"].nunique() == 8
    not_ok = manifest[manifest["status"] != "ok"]
    assert sorted(zip(not_ok["path"], not_ok["status"])) == [
        ("car/car_0675.jpg", "duplicate"), ("flower/flower_0772.jpg", "duplicate")]
    assert record["counts"]["ok"] == 6897
    sample = load_sample(tmp_path / "a")
    assert len(sample) == 400 and set(sample["category"].value_counts()) == {50}
    ingest(natural_images, tmp_path / "b", per_category=50, seed=0, workers=2, progress=False)
    for name in ("sample.parquet", "manifest.parquet"):
        assert (tmp_path / "a" / "dataset" / name).read_bytes() == (tmp_path / "b" / "dataset" / name).read_bytes()


def _png_pixels(path: str) -> int | None:
    """Width x height from the IHDR chunk, read directly (not through pintopic or Pillow)."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return width * height


def test_openclipart(openclipart: Path, openclipart_run: Path):
    manifest = load_manifest(openclipart_run)
    record = read_json(openclipart_run / "dataset" / "dataset.json")
    expected_large = set()
    found = 0
    for folder, _, files in os.walk(openclipart):  # symlinks to files are listed here too, and opened through
        for name in files:
            path = os.path.join(folder, name)
            found += 1
            if os.path.realpath(path).startswith(str(openclipart.resolve()) + os.sep):
                pixels = _png_pixels(path)
                if pixels is not None and pixels > DEFAULT_MAX_PIXELS:
                    expected_large.add(os.path.relpath(path, openclipart))
    assert len(manifest) == found
    assert set(manifest.loc[manifest["status"] == "too_large", "path"]) == expected_large
    assert expected_large  # the collection does hold over-size PNGs (some over 600 megapixels)
    ok = manifest[manifest["status"] == "ok"]
    assert 6000 <= len(ok) <= 6800, len(ok)
    assert ok["sha256"].is_unique  # no duplicate left, and so no content under two labels
    conflicts = manifest[manifest["status"] == "conflict"]
    assert conflicts.groupby("sha256")["category"].nunique().min() >= 2
    assert not (manifest["status"] == "outside_root").any()  # every symlink stays inside the root
    sampled = record["counts"]["sample_by_category"]
    assert 12 <= len(sampled) <= 18 and min(sampled.values()) >= 40  # about 15 categories keep 40+ ok images
    print(f"openclipart: {len(manifest):,} files, {len(ok):,} ok, {len(expected_large)} too_large, "
          f"{len(conflicts):,} conflict, {(manifest['status'] == 'duplicate').sum():,} duplicate")
