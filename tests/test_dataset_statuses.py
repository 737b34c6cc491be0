"""Every status ingest can give, each from a generated file, plus the awkward images that must stay ok."""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pintopic.dataset import ingest, load_manifest
from pintopic.imageio import ImageError, load_rgb


def _noise(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "RGB").convert(mode)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels, written by hand: a few bytes, no pixels allocated."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


def write(path: Path | bytes, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def build_status_tree(base: Path) -> Path:
    """A folders dataset with one file per status (and every odd-but-ok image under ``good``)."""
    root = base / "source"
    good, bad = root / "good", root / "bad"
    seed = iter(range(1000))

    def save(path: Path, image: Image.Image, **options) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **options)

    save(good / "cmyk.jpg", _noise(40, 30, next(seed), "CMYK"), format="JPEG")
    sixteen = (np.random.default_rng(next(seed)).integers(0, 65535, (30, 40))).astype(np.uint16)
    save(good / "grey16.png", Image.fromarray(sixteen))
    palette = _noise(32, 32, next(seed)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    save(good / "palette_transparent.png", palette, transparency=0)
    frames = [_noise(24, 24, next(seed)) for _ in range(3)]
    save(good / "animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=80, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    save(good / "rotated.jpg", _noise(40, 20, next(seed)), format="JPEG", exif=exif.tobytes())
    save(good / "photo.webp", _noise(30, 30, next(seed)), format="WEBP", lossless=True)
    save(good / "one_pixel.png", _noise(1, 1, next(seed)))
    save(good / "wide.png", _noise(20000, 50, next(seed)))
    save(good / "name with spaces.png", _noise(16, 16, next(seed)))
    write(os.fsencode(good) + b"/caf\xe9-latin1.png", _png_bytes(_noise(16, 16, next(seed))))
    save(good / "base.png", _noise(20, 20, next(seed)))
    os.symlink("base.png", good / "zz_link_to_base.png")  # inside the root: followed, same content -> duplicate

    write(bad / "empty.jpg", b"")
    jpeg = io.BytesIO()
    _noise(64, 64, next(seed)).save(jpeg, format="JPEG", quality=95)
    write(bad / "truncated.jpg", jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    png = _png_bytes(_noise(64, 64, next(seed)))
    write(bad / "truncated.png", png[: len(png) // 2])
    write(bad / "random.jpg", np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    write(bad / "page.jpg", b"<!DOCTYPE html>\n<html><head><title>404</title></head><body>Not found</body></html>\n")
    write(bad / "huge.png", huge_png_header(60000, 60000))
    write(bad / "vector.svg", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>\n')
    (bad / "folder.jpg").mkdir()  # a directory named like an image: not a file, counted as ignored

    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    _noise(16, 16, next(seed)).save(elsewhere / "outside.png")
    os.symlink(elsewhere / "outside.png", bad / "outside_link.png")

    save(root / "None" / "uncategorised.png", _noise(16, 16, next(seed)))  # "None" normalises to the excluded "none"
    same = _noise(20, 20, next(seed))
    save(root / "dups" / "a.png", same)
    save(root / "dups" / "b.png", same)
    shared = _noise(20, 20, next(seed))
    save(root / "cat_a" / "shared.png", shared)
    save(root / "cat_b" / "shared.png", shared)
    save(root / "cat_b" / "own.png", _noise(20, 20, next(seed)))
    (root / "README.txt").write_text("top-level files have no category and are ignored\n")
    return root


EXPECTED = {
    "good/cmyk.jpg": "ok", "good/grey16.png": "ok", "good/palette_transparent.png": "ok", "good/animated.gif": "ok",
    "good/rotated.jpg": "ok", "good/photo.webp": "ok", "good/one_pixel.png": "ok", "good/wide.png": "ok",
    "good/name with spaces.png": "ok", "good/caf\\xe9-latin1.png": "ok", "good/base.png": "ok",
    "good/zz_link_to_base.png": "duplicate",
    "bad/empty.jpg": "empty", "bad/truncated.jpg": "truncated", "bad/truncated.png": "truncated",
    "bad/random.jpg": "not_an_image", "bad/page.jpg": "not_an_image", "bad/huge.png": "too_large",
    "bad/vector.svg": "unsupported", "bad/outside_link.png": "outside_root",
    "None/uncategorised.png": "excluded_category", "dups/a.png": "ok", "dups/b.png": "duplicate",
    "cat_a/shared.png": "conflict", "cat_b/shared.png": "conflict", "cat_b/own.png": "ok",
}


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

    def crashing(path, max_pixels=None):
        if path.endswith(b"boom.png"):
            os._exit(3)
        return real(path, max_pixels)

    # fork, so the workers inherit the patched function
    monkeypatch.setattr(verify, "_context", lambda: multiprocessing.get_context("fork"))
    monkeypatch.setattr(verify, "verify_file", crashing)
    results = verify.verify_files(paths, workers=2, progress=False)
    assert [r.status for r in results] == ["ok"] * 5 + ["truncated"] + ["ok"] * 6
    assert "crashed" in results[5].detail
