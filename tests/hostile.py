"""The hostile corpus shared by the dataset and reliability tests: every awkward file, with the status it must get.

``HOSTILE_IMAGES`` lists the file-level cases (damaged, not images, too large, odd-but-valid images);
:func:`build_status_tree` lays them out as a folders dataset and :func:`build_hostile_crawl` as a crawl
(the study's layout, adding the metadata cases: ``bad_metadata``, ``no_category``, and metadata files that
are pipes, symlinks to ``/dev/zero``, 10 KB of nested brackets or wrongly typed categories).
:func:`build_hostile_folders` is a folders dataset for a whole ``pintopic run``: category names that break
naive CSV and pandas code, a 1,100-level deep tree, a symlink chain that doubles at every level, a symlink
loop, a pipe and a device among the images, and the run folder inside the source. Every special file is
made with the real system call (``os.mkfifo``, ``os.symlink``), no mocks.
"""
from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


def noise(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "RGB").convert(mode)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels, written by hand: a few bytes, no pixels allocated."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


def crc_broken_png() -> bytes:
    """A small PNG whose IHDR checksum is wrong: damaged (``truncated``), not "no image format recognised"."""
    ihdr = struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)
    good = _chunk(b"IHDR", ihdr)
    return b"\x89PNG\r\n\x1a\n" + good[:-4] + b"\0\0\0\0" + _chunk(b"IDAT", zlib.compress(b"\0" * 52)) + _chunk(b"IEND", b"")


def zero_size_png() -> bytes:
    """A PNG declaring 0 x 0 pixels."""
    ihdr = struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0")) + _chunk(b"IEND", b"")


def write(path: Path | bytes, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def _save(image: Image.Image, **options) -> Callable[[bytes], None]:
    def writer(path: bytes) -> None:
        buffer = io.BytesIO()
        image.save(buffer, **options)
        write(path, buffer.getvalue())
    return writer


def _bytes(data: bytes) -> Callable[[bytes], None]:
    return lambda path: write(path, data)


def _half(image: Image.Image, fmt: str) -> Callable[[bytes], None]:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    data = buffer.getvalue()
    return _bytes(data[: len(data) // 2])


def _hostile_images() -> list[tuple[bytes, str, Callable[[bytes], None]]]:
    seed = iter(range(1000))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    frames = [noise(24, 24, next(seed)) for _ in range(3)]
    sixteen = np.random.default_rng(next(seed)).integers(0, 65535, (30, 40)).astype(np.uint16)
    palette = noise(32, 32, next(seed)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return [
        (b"cmyk.jpg", "ok", _save(noise(40, 30, next(seed), "CMYK"), format="JPEG")),
        (b"grey16.png", "ok", _save(Image.fromarray(sixteen), format="PNG")),
        (b"palette_transparent.png", "ok", _save(palette, format="PNG", transparency=0)),
        (b"animated.gif", "ok", _save(frames[0], format="GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)),
        (b"rotated.jpg", "ok", _save(noise(40, 20, next(seed)), format="JPEG", exif=exif.tobytes())),
        (b"photo.webp", "ok", _save(noise(30, 30, next(seed)), format="WEBP", lossless=True)),
        (b"one_pixel.png", "ok", _save(noise(1, 1, next(seed)), format="PNG")),
        (b"wide.png", "ok", _save(noise(20000, 50, next(seed)), format="PNG")),
        (b"name with spaces.png", "ok", _save(noise(16, 16, next(seed)), format="PNG")),
        (b"caf\xe9-latin1.png", "ok", _save(noise(16, 16, next(seed)), format="PNG")),  # not valid UTF-8
        (b"empty.jpg", "empty", _bytes(b"")),
        (b"truncated.jpg", "truncated", _half(noise(64, 64, next(seed)), "JPEG")),
        (b"truncated.png", "truncated", _half(noise(64, 64, next(seed)), "PNG")),
        (b"random.jpg", "not_an_image", _bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())),
        (b"page.jpg", "not_an_image", _bytes(b"<!DOCTYPE html>\n<html><head><title>404</title></head><body>Not found</body></html>\n")),
        (b"huge.png", "too_large", _bytes(huge_png_header(60000, 60000))),
        (b"vector.svg", "unsupported", _bytes(b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>\n')),
        (b"bad_crc.png", "truncated", _bytes(crc_broken_png())),
        (b"zero_size.png", "truncated", _bytes(zero_size_png())),
    ]


#: (file name bytes, expected status, writer(path bytes)) for every file-level hostile case.
HOSTILE_IMAGES = _hostile_images()


def _outside_file(base: Path) -> Path:
    """An image outside the dataset root, for symlinks leading out of it."""
    elsewhere = base / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    noise(16, 16, 900).save(elsewhere / "outside.png")
    return elsewhere / "outside.png"


def build_status_tree(base: Path) -> Path:
    """A folders dataset with one file per status (and every odd-but-ok image under ``good``)."""
    root = base / "source"
    good, bad = root / "good", root / "bad"
    for name, status, writer in HOSTILE_IMAGES:
        writer(os.fsencode(good if status == "ok" else bad) + b"/" + name)
    noise(20, 20, 901).save(good / "base.png")
    os.symlink("base.png", good / "zz_link_to_base.png")  # inside the root: followed, same content -> duplicate
    (bad / "folder.jpg").mkdir()  # a directory named like an image: not a file, counted as ignored
    os.symlink(_outside_file(base), bad / "outside_link.png")

    def save(path: Path, image: Image.Image) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)

    save(root / "None" / "uncategorised.png", noise(16, 16, 902))  # "None" normalises to the excluded "none"
    same = noise(20, 20, 903)
    save(root / "dups" / "a.png", same)
    save(root / "dups" / "b.png", same)
    shared = noise(20, 20, 904)
    save(root / "cat_a" / "shared.png", shared)
    save(root / "cat_b" / "shared.png", shared)
    save(root / "cat_b" / "own.png", noise(20, 20, 905))
    (root / "README.txt").write_text("top-level files have no category and are ignored\n")
    return root


def _display(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


#: The manifest ``path`` -> status that :func:`build_status_tree` must give.
EXPECTED = {
    **{f"{'good' if status == 'ok' else 'bad'}/{_display(name)}": status for name, status, _ in HOSTILE_IMAGES},
    "good/base.png": "ok", "good/zz_link_to_base.png": "duplicate", "bad/outside_link.png": "outside_root",
    "None/uncategorised.png": "excluded_category", "dups/a.png": "ok", "dups/b.png": "duplicate",
    "cat_a/shared.png": "conflict", "cat_b/shared.png": "conflict", "cat_b/own.png": "ok",
}

#: Plain colours of the clean boards of :func:`build_hostile_crawl`, so a classifier has something to learn.
CLEAN_BOARDS = {"travel": ("beach", (30, 120, 220)), "food_drink": ("cakes", (220, 160, 40))}
HOSTILE_BOARD, HOSTILE_CATEGORY = "odd-files", "art"


def build_hostile_crawl(base: Path, clean_per_board: int = 8) -> tuple[Path, dict[str, tuple[str, str | None]]]:
    """The whole hostile corpus as a crawl; returns ``(root, {manifest path: (status, category)})``.

    User ``ana`` has a board ``odd-files`` (category Art) with one pin per hostile file, a pin whose
    ``pin.json`` is not JSON, a pin holding a folder named like an image next to its image, a symlink
    pin leading out of the root, two clean boards for a classifier to learn, and a board without a category.
    """
    root = base / "crawl"
    user = root / "ana"
    user.mkdir(parents=True)
    (user / "boards.json").write_text(json.dumps([
        {"slug": HOSTILE_BOARD, "name": "Odd files", "category": "Art"},
        *({"slug": slug, "category": category} for category, (slug, _) in CLEAN_BOARDS.items()),
        {"slug": "unsorted", "name": "Unsorted"},  # no category
    ]))
    board = os.fsencode(user / HOSTILE_BOARD)
    expected: dict[str, tuple[str, str | None]] = {}
    for number, (name, status, writer) in enumerate(HOSTILE_IMAGES):
        pin = f"{100 + number}".encode()
        writer(board + b"/" + pin + b"/" + name)
        write(board + b"/" + pin + b"/pin.json", json.dumps({"description": f"pin {number}"}).encode())
        expected[f"{HOSTILE_BOARD}/{pin.decode()}/{_display(name)}"] = (status, HOSTILE_CATEGORY)
    odd = user / HOSTILE_BOARD
    noise(20, 20, 910).save((odd / "200").mkdir() or odd / "200" / "image.png")
    (odd / "200" / "pin.json").write_text("{not json")
    expected[f"{HOSTILE_BOARD}/200/image.png"] = ("bad_metadata", HOSTILE_CATEGORY)
    noise(20, 20, 911).save((odd / "201").mkdir() or odd / "201" / "image.png")
    (odd / "201" / "photo.jpg").mkdir()  # a directory named like an image: ignored, counted
    expected[f"{HOSTILE_BOARD}/201/image.png"] = ("ok", HOSTILE_CATEGORY)
    (odd / "202").mkdir()
    os.symlink(_outside_file(base), odd / "202" / "image.png")
    expected[f"{HOSTILE_BOARD}/202/image.png"] = ("outside_root", HOSTILE_CATEGORY)
    for c_index, (category, (slug, colour)) in enumerate(CLEAN_BOARDS.items()):
        for i in range(clean_per_board):
            array = np.clip(np.full((32, 40, 3), colour) + np.random.default_rng(50 + 100 * c_index + i)
                            .integers(-30, 30, (32, 40, 3)), 0, 255).astype(np.uint8)
            (user / slug / f"{i}").mkdir(parents=True)
            Image.fromarray(array).save(user / slug / f"{i}" / "image.jpg", quality=95)
            expected[f"{slug}/{i}/image.jpg"] = ("ok", category)
    noise(20, 20, 912).save((user / "unsorted" / "1").mkdir(parents=True) or user / "unsorted" / "1" / "image.png")
    expected["unsorted/1/image.png"] = ("no_category", None)
    expected = {f"ana/{path}": value for path, value in expected.items()}
    expected.update(_hostile_pins(odd))
    expected.update(_hostile_users(root))
    return root, expected


#: The nested-bracket JSON that made the parser raise RecursionError (10 KB).
NESTED_JSON = "[" * 10_000


def _pin_with(board: Path, pin: str, seed: int) -> Path:
    folder = board / pin
    folder.mkdir(parents=True)
    noise(20, 20, seed).save(folder / "image.png")
    return folder


def _hostile_pins(odd: Path) -> dict[str, tuple[str, str | None]]:
    """Pins of ana's odd-files board whose pin.json or image is hostile: a pipe, a symlink to /dev/zero, nested
    brackets, a symlink loop, a pipe or a device where the image should be."""
    expected = {}
    os.mkfifo(_pin_with(odd, "203", 920) / "pin.json")
    os.symlink("/dev/zero", _pin_with(odd, "204", 921) / "pin.json")
    (_pin_with(odd, "205", 922) / "pin.json").write_text(NESTED_JSON)
    for pin, status in (("203", "bad_metadata"), ("204", "outside_root"), ("205", "bad_metadata")):
        expected[f"ana/{HOSTILE_BOARD}/{pin}/image.png"] = (status, HOSTILE_CATEGORY)
    (odd / "206").mkdir()
    os.symlink("image.png", odd / "206" / "image.png")  # a symlink loop
    expected[f"ana/{HOSTILE_BOARD}/206/image.png"] = ("missing_image", HOSTILE_CATEGORY)
    (odd / "207").mkdir()
    os.mkfifo(odd / "207" / "image.jpg")  # not a file: the pin folder has no image
    expected[f"ana/{HOSTILE_BOARD}/207"] = ("missing_image", HOSTILE_CATEGORY)
    (odd / "208").mkdir()
    os.symlink("/dev/zero", odd / "208" / "image.jpg")
    expected[f"ana/{HOSTILE_BOARD}/208/image.jpg"] = ("outside_root", HOSTILE_CATEGORY)
    return expected


def _hostile_users(root: Path) -> dict[str, tuple[str, str | None]]:
    """Users whose boards.json is a pipe (bob), nested brackets (carl), wrongly typed categories (dora), a symlink
    to /dev/zero (eve)."""
    expected = {}
    for user, seed in (("bob", 930), ("carl", 931), ("eve", 932)):
        _pin_with(root / user / "board", "1", seed)
    os.mkfifo(root / "bob" / "boards.json")
    (root / "carl" / "boards.json").write_text(NESTED_JSON)
    os.symlink("/dev/zero", root / "eve" / "boards.json")
    expected.update({"bob/board/1/image.png": ("bad_metadata", None), "carl/board/1/image.png": ("bad_metadata", None),
                     "eve/board/1/image.png": ("outside_root", None)})
    dora = root / "dora"
    dora.mkdir()
    (dora / "boards.json").write_text(json.dumps([{"slug": "number", "category": 123},
                                                  {"slug": "list", "category": ["a", "b"]},
                                                  {"slug": "fine", "category": "Travel"}]))
    for board, seed, status, category in (("number", 933, "bad_metadata", None), ("list", 934, "bad_metadata", None),
                                          ("fine", 935, "ok", "travel")):
        _pin_with(dora / board, "1", seed)
        expected[f"dora/{board}/1/image.png"] = (status, category)
    return expected


#: Category folder names that are legal folder names but break naive CSV writing or pandas reading.
ODD_CATEGORIES = ("hats, caps", "NA", "null", "nan", "123", 'say "cheese"', "ünïcödé ✓", "$\\frac$", " padded ")
#: A category with exactly the ingest minimum (5 images): the 80/20 split leaves 4 training images, too few
#: for 5-fold cross-validation, so evaluate drops it with a warning.
SMALL_CATEGORY = "small"
DEEP_LEVELS = 1_100
CHAIN_LEVELS = 26


def deep_tree(base: Path, levels: int) -> Path:
    """``base/d/d/.../d`` (``levels`` folders), made one mkdir at a time (``os.makedirs`` recurses too deep)."""
    base.mkdir(parents=True, exist_ok=True)
    path = str(base)
    for _ in range(levels):
        path += "/d"
        os.mkdir(path)
    return Path(path)


def tree_snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple]:
    """``{relative path: (mode, size, mtime_ns, link target)}`` of everything below ``root`` (``lstat`` only, so
    pipes and devices are never opened; no recursion, so deep trees are fine), leaving out ``skip`` folders:
    equal snapshots before and after a command prove it touched nothing there."""
    skipped = {os.fspath(path) for path in skip}
    found, stack = {}, [os.fspath(root)]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.path in skipped:
                    continue
                info = entry.stat(follow_symlinks=False)
                target = os.readlink(entry.path) if entry.is_symlink() else None
                folder_entry = entry.is_dir(follow_symlinks=False)
                # a folder's own mtime changes when the run folder is made inside it; what is in it is compared
                found[os.path.relpath(entry.path, root)] = (info.st_mode, 0 if folder_entry else info.st_size,
                                                           0 if folder_entry else info.st_mtime_ns, target)
                if folder_entry:
                    stack.append(entry.path)
    return found


def remove_tree(top: Path) -> None:
    """Delete a folder tree bottom-up without recursion (``shutil.rmtree``, and so pytest's cleanup of old temporary
    folders, recurses once per level and fails on :data:`DEEP_LEVELS`-deep trees)."""
    stack, folders = [os.fspath(top)], []
    while stack:
        folder = stack.pop()
        folders.append(folder)
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    os.unlink(entry.path)
    for folder in reversed(folders):
        os.rmdir(folder)


def build_hostile_folders(base: Path, per_category: int = 8) -> tuple[Path, dict[str, tuple[str, str | None]]]:
    """A folders dataset for ``pintopic run``; returns ``(root, {manifest path: (status, category)})``.

    Each of :data:`ODD_CATEGORIES` holds ``per_category`` images of its own colour; ``small`` holds 5. Under
    ``hats, caps`` an image 1,100 folders deep; under ``NA`` a symlink chain (two links per level to the next
    level, 26 levels: 2**25 paths to one image, which must be listed once), a symlink loop, a pipe and a symlink
    to /dev/zero named like images; under ``123`` images named .avif/.ico/.jfif/.jpe and a hidden one.
    """
    root = base / "folders"
    expected: dict[str, tuple[str, str | None]] = {}
    rng = np.random.default_rng(77)
    for index, name in enumerate((*ODD_CATEGORIES, SMALL_CATEGORY)):
        colour = rng.integers(0, 255, 3)
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(5 if name == SMALL_CATEGORY else per_category):
            array = np.clip(colour + np.random.default_rng(1000 * index + i).integers(-25, 25, (24, 24, 3)), 0, 255)
            Image.fromarray(array.astype(np.uint8)).save(folder / f"{i}.png")
            expected[f"{name}/{i}.png"] = ("ok", name.strip())
    deep = deep_tree(root / "hats, caps", DEEP_LEVELS)
    noise(16, 16, 940).save(deep / "bottom.png")
    expected[f"hats, caps/{'d/' * DEEP_LEVELS}bottom.png"] = ("ok", "hats, caps")
    levels = root / ".levels"  # hidden: reached only through the chain of symlinks
    for level in range(CHAIN_LEVELS):
        (levels / f"L{level}").mkdir(parents=True)
    for level in range(CHAIN_LEVELS - 1):
        for link in ("a", "b"):
            os.symlink(f"../L{level + 1}", levels / f"L{level}" / link)
    noise(16, 16, 941).save(levels / f"L{CHAIN_LEVELS - 1}" / "end.png")
    os.symlink("../.levels/L0", root / "NA" / "chain")
    expected[f"NA/chain/{'a/' * (CHAIN_LEVELS - 1)}end.png"] = ("ok", "NA")
    os.symlink("loop.png", root / "NA" / "loop.png")
    expected["NA/loop.png"] = ("missing_image", "NA")
    os.mkfifo(root / "NA" / "pipe.jpg")  # not a file: ignored, counted
    os.symlink("/dev/zero", root / "NA" / "zero.jpg")
    expected["NA/zero.jpg"] = ("outside_root", "NA")
    for i, suffix in enumerate((".avif", ".ico", ".jfif", ".jpe")):
        (root / "123" / f"renamed{suffix}").write_bytes(png_bytes(noise(12, 12, 950 + i)))
        expected[f"123/renamed{suffix}"] = ("ok", "123")
    (root / "123" / ".hidden.png").write_bytes(png_bytes(noise(12, 12, 960)))  # hidden: not listed
    for name, status, writer in HOSTILE_IMAGES:
        if name in (b"bad_crc.png", b"zero_size.png"):
            writer(os.fsencode(root / "null") + b"/" + name)
            expected[f"null/{name.decode()}"] = (status, "null")
    return root, expected
