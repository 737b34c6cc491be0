"""The decode cache ingest writes for extraction: which files get a copy, its fidelity, and the fallbacks."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pintopic.dataset import ingest
from pintopic.dataset.decode_cache import CACHE_SIDE
from pintopic.dataset.manifest import image_tasks
from pintopic.features.decoding import DecodeDataset
from pintopic.features.preprocess import ImagePreprocessor, Preprocessing
from pintopic.imageio import load_rgb

#: Lite0/ConvNeXt-T-like (224 crop of 256) and a larger, uncropped input (like the biggest study backbones).
PREPROCESSINGS = [
    Preprocessing((3, 224, 224), "bicubic", 0.875, "center", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    Preprocessing((3, 300, 300), "bicubic", 1.0, "center", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
]


def _detailed(size, seed, alpha=False):
    """Smooth colour noise crossed by thin lines (clip-art-like detail)."""
    rng = np.random.default_rng(seed)
    width, height = size
    blocks = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 4 if alpha else 3), dtype=np.uint8)
    array = np.array(Image.fromarray(blocks, "RGBA" if alpha else "RGB").resize((width, height), Image.Resampling.BICUBIC))
    array[::37, :, :3] = 0
    array[:, ::41, :3] = 255
    return Image.fromarray(array, "RGBA" if alpha else "RGB")


@pytest.fixture
def mixed_source(tmp_path):
    root = tmp_path / "source"
    (root / "art").mkdir(parents=True)
    (root / "travel").mkdir(parents=True)
    _detailed((1800, 1600), 1, alpha=True).save(root / "art" / "big-alpha.png")
    _detailed((1600, 1600), 2).save(root / "art" / "big.jpg", quality=95)
    _detailed((300, 260), 3, alpha=True).save(root / "travel" / "small-alpha.png")
    _detailed((300, 260), 4).save(root / "travel" / "small.jpg", quality=95)
    _detailed((300, 260), 5).save(root / "travel" / "small-rgb.png")
    _detailed((1560, 1700), 6).save(root / "travel" / "big-rgb.png")
    return root


@pytest.mark.timeout(120)
def test_costly_files_get_a_copy_that_preprocesses_within_one_level(mixed_source, tmp_path):
    run = tmp_path / "run"
    record = ingest(mixed_source, run, min_per_category=1, progress=False, workers=1)
    tasks = {task.path.rsplit("/", 1)[-1]: task for task in image_tasks(run, all_rows=False)}
    cached = {name for name, task in tasks.items() if task.read_from}
    assert {"big-alpha.png", "small-alpha.png"} <= cached <= {"big-alpha.png", "small-alpha.png", "big-rgb.png"}
    assert record["decode_cache"]["files"] == len(cached) and record["decode_cache"]["side"] == CACHE_SIDE
    big = Image.open(tasks["big-alpha.png"].read_from)
    assert big.mode == "RGB" and min(big.size) in (800, 1600)  # box-reduced by 2 if that checked out, else full size
    for task in tasks.values():
        for preprocessing in PREPROCESSINGS:
            preprocess = ImagePreprocessor(preprocessing)
            direct = preprocess(task.path).astype(np.float32)
            cached = preprocess(task.decode_path).astype(np.float32)
            assert np.abs(direct - cached).mean() < 1.0, (task.path, preprocessing.input_size)  # in 0..255 units


@pytest.mark.timeout(60)
def test_without_the_cache_and_with_a_damaged_copy_extraction_reads_the_original(mixed_source, tmp_path):
    off = tmp_path / "off"
    record = ingest(mixed_source, off, min_per_category=1, progress=False, workers=1, decode_cache=False)
    assert "decode_cache" not in record and not (off / "dataset" / "cache").exists()
    assert all(task.read_from is None for task in image_tasks(off, all_rows=False))

    run = tmp_path / "run"
    ingest(mixed_source, run, min_per_category=1, progress=False, workers=1)
    task = next(t for t in image_tasks(run, all_rows=False) if t.path.endswith("small-alpha.png"))
    with open(task.read_from, "r+b") as handle:
        handle.truncate(40)  # a damaged copy
    preprocess = ImagePreprocessor(PREPROCESSINGS[0])
    index, pixels, status, _ = DecodeDataset([task.decode_path], preprocess, [task.path])[0]
    assert status == "ok" and np.array_equal(pixels, preprocess(task.path))


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_real_large_clip_art_stays_within_one_level(openclipart, tmp_path):
    """Real openclipart PNGs with alpha, shorter side >= 2x the cache side: the reduced copy's error after resizing."""
    from pintopic.dataset.decode_cache import cached_copy

    checked = 0
    for path in sorted(openclipart.rglob("*.png")):
        try:
            with Image.open(path) as header:
                if not (2 * CACHE_SIDE <= min(header.size) and header.size[0] * header.size[1] <= 40_000_000):
                    continue
        except Image.DecompressionBombError:
            continue
        original = load_rgb(path)
        copy = tmp_path / f"{checked}.png"
        cached_copy(original, path.read_bytes()[:32]).save(copy)
        for preprocessing in PREPROCESSINGS:
            preprocess = ImagePreprocessor(preprocessing)
            error = np.abs(preprocess(path).astype(np.float32) - preprocess(copy).astype(np.float32)).mean()
            assert error < 1.0, (path, preprocessing.input_size, error)
        checked += 1
        if checked == 6:
            break
    assert checked >= 3


def test_a_reduction_that_would_blur_fine_lines_away_is_refused():
    """Alternating 1-pixel lines average to grey when box-reduced: the copy stays full size (or is not made)."""
    from pintopic.dataset.decode_cache import cached_copy

    array = np.zeros((1100, 1100, 3), dtype=np.uint8)
    array[::2] = 255
    lines = Image.fromarray(array)
    assert cached_copy(lines, b"GIF89a").size == (1100, 1100)  # not a JPEG: a full-size RGB copy
    assert cached_copy(lines, b"\x89PNG\r\n\x1a\n" + bytes(17) + b"\x02") is None  # plain RGB PNG: no copy
    smooth = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    smooth = smooth.resize((1100, 1100), Image.Resampling.BICUBIC)
    assert cached_copy(smooth, b"GIF89a").size == (550, 550)  # smooth content is reduced


@pytest.mark.timeout(120)
def test_report_thumbnails_read_the_reduced_copy(mixed_source, tmp_path):
    from pintopic.dataset import load_sample
    from pintopic.dataset.decode_cache import decode_cache_folder
    from pintopic.report.thumbnails import thumbnail_source, thumbnail_uri

    run = tmp_path / "run"
    ingest(mixed_source, run, min_per_category=1, progress=False, workers=1)
    folder = decode_cache_folder(run / "dataset")
    rows = {row["abspath"].decode().rsplit("/", 1)[-1]: row for _, row in load_sample(run).iterrows()}
    copy = thumbnail_source(rows["big-alpha.png"], folder)
    assert copy.startswith(str(folder)) and copy.endswith(f"{rows['big-alpha.png']['sha256']}.png")
    assert thumbnail_source(rows["big-alpha.png"], None).endswith("big-alpha.png")  # no cache: the original
    assert thumbnail_source(rows["small.jpg"], folder).endswith("small.jpg")  # no copy kept for it
    assert thumbnail_uri(copy).startswith("data:image/jpeg;base64,")
