"""Every status ingest can give, each from a generated file, plus the awkward images that must stay ok."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hostile import EXPECTED, build_status_tree, huge_png_header
from hostile import noise as _noise
from PIL import Image

from pintopic.dataset import ingest, load_manifest
from pintopic.imageio import ImageError, load_rgb


@pytest.fixture(scope="module")
def status_run(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("statuses")
    source = build_status_tree(base)
    run = base / "run"
    ingest(source, run, workers=2, min_per_category=1, progress=False)
    return source, run


def test_every_status_from_generated_files(status_run):
    _, run = status_run
    manifest = load_manifest(run)
    got = dict(zip(manifest["path"], manifest["status"]))
    assert got == EXPECTED
    assert all(manifest.loc[manifest["status"] != "ok", "reason_detail"].str.len() > 0)


def test_details_and_sizes(status_run):
    _, run = status_run
    rows = load_manifest(run).set_index("path")
    assert (rows.loc["good/rotated.jpg", "width"], rows.loc["good/rotated.jpg", "height"]) == (20, 40)  # EXIF applied
    assert (rows.loc["good/wide.png", "width"], rows.loc["good/wide.png", "height"]) == (20000, 50)
    assert (rows.loc["bad/huge.png", "width"], rows.loc["bad/huge.png", "height"]) == (60000, 60000)
    assert "HTML" in rows.loc["bad/page.jpg", "reason_detail"]
    assert "SVG" in rows.loc["bad/vector.svg", "reason_detail"]
    assert "outside the source folder" in rows.loc["bad/outside_link.png", "reason_detail"]
    assert rows.loc["dups/b.png", "reason_detail"] == "same content as dups/a.png"
    assert "cat_a" in rows.loc["cat_b/shared.png", "reason_detail"]
    assert rows.loc["None/uncategorised.png", "category"] == "none"
    assert rows.loc["good/zz_link_to_base.png", "sha256"] == rows.loc["good/base.png", "sha256"]


def test_paths_ids_and_summary(status_run):
    import hashlib

    from pintopic.dataset import image_file
    from pintopic.runio import read_json

    source, run = status_run
    manifest = load_manifest(run)
    latin = manifest[manifest["path"] == "good/caf\\xe9-latin1.png"].iloc[0]
    assert latin["image_id"] == hashlib.sha1(b"good/caf\xe9-latin1.png").hexdigest()
    assert os.path.exists(image_file(latin))
    assert bytes(latin["abspath"]) == os.path.realpath(os.fsencode(source)) + b"/good/caf\xe9-latin1.png"
    spaced = manifest[manifest["path"] == "good/name with spaces.png"].iloc[0]
    load_rgb(image_file(spaced))
    record = read_json(run / "dataset" / "dataset.json")
    assert record["counts"]["ignored_dirs"] == 1 and "bad/folder.jpg" in record["ignored_dirs"][0]
    assert record["counts"]["ignored_files"] == 1  # README.txt at the top level
    assert record["counts"]["found"] == len(EXPECTED)
    assert sum(record["counts"]["by_status"].values()) == len(EXPECTED)


def test_parallel_and_serial_agree(status_run, tmp_path):
    source, run = status_run
    serial = tmp_path / "serial"
    ingest(source, serial, workers=1, min_per_category=1, progress=False)
    for name in ("manifest.parquet", "sample.parquet", "distribution.csv", "distribution.png"):
        assert (serial / "dataset" / name).read_bytes() == (run / "dataset" / name).read_bytes(), name


def test_too_large_is_refused_from_the_header_without_allocating(tmp_path):
    import resource

    path = tmp_path / "huge.png"
    path.write_bytes(huge_png_header(60000, 60000))  # 3.6 gigapixels: 10.8 GB if it were decoded
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError) as caught:
        load_rgb(path)
    assert caught.value.status == "too_large" and caught.value.size == (60000, 60000)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KiB: under 50 MB more


def test_custom_max_pixels(tmp_path):
    source = tmp_path / "src"
    _noise(100, 100, 1).save((source / "a").mkdir(parents=True) or source / "a" / "big.png")
    _noise(10, 10, 2).save(source / "a" / "small.png")
    ingest(source, tmp_path / "run", max_pixels=5000, workers=1, min_per_category=1, progress=False)
    rows = load_manifest(tmp_path / "run").set_index("path")
    assert rows.loc["a/big.png", "status"] == "too_large" and rows.loc["a/small.png", "status"] == "ok"


def test_load_rgb_modes(tmp_path):
    """The decoder used by every stage flattens every mode to 8-bit RGB, transparency on white."""
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.save(tmp_path / "clear.png")
    image = load_rgb(tmp_path / "clear.png")
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(tmp_path / "white16.png")
    assert load_rgb(tmp_path / "white16.png").getpixel((1, 1)) == (255, 255, 255)
    Image.new("1", (3, 3), 1).save(tmp_path / "bits.png")
    assert load_rgb(tmp_path / "bits.png").mode == "RGB"
    (tmp_path / "doc.pdf").write_bytes(b"%PDF-1.4\n%...\n")
    with pytest.raises(ImageError) as caught:
        load_rgb(tmp_path / "doc.pdf")
    assert caught.value.status == "unsupported"
    (tmp_path / "phone.heic").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64))
    with pytest.raises(ImageError) as caught:
        load_rgb(tmp_path / "phone.heic")
    assert caught.value.status == "unsupported" and "HEIF" in caught.value.detail
    Image.new("RGB", (10, 8), (1, 2, 3)).save(tmp_path / "modern.avif")
    assert load_rgb(tmp_path / "modern.avif").size == (10, 8)
    with pytest.raises(ImageError) as caught:
        load_rgb(tmp_path / "nothing-here.png")
    assert caught.value.status == "missing_image"


def test_a_worker_crash_is_isolated_to_its_file(tmp_path, monkeypatch):
    """A decoder that kills its process (segfault, OOM killer) costs that file only, not the run."""
    import multiprocessing

    import pintopic.dataset.verify as verify

    paths = []
    for i in range(12):
        path = tmp_path / ("boom.png" if i == 5 else f"{i}.png")
        _noise(8, 8, 500 + i).save(path)
        paths.append(os.fsencode(path))
    real = verify.verify_file

    def crashing(path, max_pixels=None, *rest):
        if path.endswith(b"boom.png"):
            os._exit(3)
        return real(path, max_pixels, *rest)

    import pintopic.engine.local

    # fork, so the workers inherit the patched function
    monkeypatch.setattr(pintopic.engine.local, "_context", lambda: multiprocessing.get_context("fork"))
    monkeypatch.setattr(verify, "verify_file", crashing)
    results = verify.verify_files(paths, workers=2, progress=False)
    assert [r.status for r in results] == ["ok"] * 5 + ["truncated"] + ["ok"] * 6
    assert "crashed" in results[5].detail


def test_verification_order_puts_outliers_first_then_shuffles_runs_of_the_listing():
    from pintopic.dataset.verify import ORDER_RUN, verification_order

    sizes = [10, 12, 400, 11, None, 9, 60, 10]  # median 10: 400 and 60 are 4x it or more
    assert verification_order(sizes) == [2, 6, 0, 1, 3, 4, 5, 7]  # fewer files than one run: listing order
    assert verification_order([None, None]) == [0, 1]
    assert verification_order([]) == []

    many = [100] * (ORDER_RUN * 6) + [10_000]
    order = verification_order(many)
    assert order[0] == len(many) - 1 and sorted(order) == list(range(len(many)))
    runs = [order[1 + start:1 + start + ORDER_RUN] for start in range(0, len(many) - 1, ORDER_RUN)]
    assert all(run == list(range(run[0], run[0] + len(run))) for run in runs)  # consecutive files stay together
    assert [run[0] for run in runs] != sorted(run[0] for run in runs)  # but the runs are shuffled
    assert order == verification_order(many) != verification_order(many, seed=1)  # seeded
