"""``pintopic make-crawl``: turn a folders dataset into a synthetic crawl of the study's shape.

Every image of ``FOLDERS_SOURCE/<category>/**`` becomes one pin: it goes to a user drawn at random
(seeded), onto one of that user's boards for its category (a user has one or two boards per
category), in ``OUT/<user>/<board slug>/<pin id>/`` with a ``pin.json`` and a copy of the image.
Each user's ``boards.json`` lists the boards with their category (the source folder name, as
written). Ingesting the crawl gives every pin its board's category, i.e. its source folder's.

``--off-theme F --wrong-boards W [--board-size 10-60] [--taste 3]`` make a realistic noisy crawl instead
(:mod:`pintopic.dataset.boardplan`): users with a taste, boards of 10-60 pins of which a share ``F`` come
from other categories, and a share ``W`` of boards filed under a wrong category. Pins then say nothing of
their source, and ``OUT/truth.parquet`` (``user``, ``board``, ``pin``, ``category`` = the true one, ...) is
written beside the user folders: the dataset stage only reads user folders, so it never reaches training.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pintopic.dataset.boardplan import NoiseSettings, plan_boards
from pintopic.dataset.layouts import display, scan_folders
from pintopic.errors import PintopicError

#: The file beside the user folders that holds every pin's true category (noisy crawls only).
TRUTH_FILE = "truth.parquet"
_BOARD_TITLES = ("{name}", "{name} ideas", "My {name}", "{name} inspiration", "Best of {name}", "{name} board")


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "board"


def make_crawl(folders_source, out, *, users: int = 20, seed: int = 0, off_theme: float = 0.0,
               wrong_boards: float = 0.0, board_size: tuple[int, int] | None = None, taste: int = 3) -> dict:
    """Write a crawl made from ``folders_source`` to ``out``; returns ``{"pins", "boards", "users"}`` counts.

    With ``off_theme``, ``wrong_boards`` or ``board_size`` set, the crawl is noisy (see
    :mod:`pintopic.dataset.boardplan`) and ``OUT/truth.parquet`` records every pin's true category,
    beside the user folders, where the dataset stage never looks.
    """
    source = Path(os.fsdecode(folders_source))
    out = Path(os.fsdecode(out))
    if int(users) < 1:
        raise PintopicError("--users must be at least 1")
    if not source.is_dir():
        raise PintopicError(f"{source} is not a folder (make-crawl needs SOURCE/<category>/<images>)")
    if out.exists() and any(out.iterdir()):
        raise PintopicError(f"{out} exists and is not empty; choose a new folder")
    if os.path.realpath(out).startswith(os.path.realpath(source) + os.sep):
        raise PintopicError(f"{out} is inside the source folder {source}")
    listing = scan_folders(source)
    images = [entry for entry in sorted(listing.entries, key=lambda item: item.rel)
              if entry.status is None and entry.category]
    if not images:
        raise PintopicError(f"no image files found under {source}/<category>/")
    rng = random.Random(int(seed))
    user_names = [f"user{index:03d}" for index in range(1, int(users) + 1)]
    if off_theme or wrong_boards or board_size is not None:
        settings = NoiseSettings(float(off_theme), float(wrong_boards), tuple(board_size or (10, 60)), int(taste))
        return _noisy_crawl(images, out, user_names, settings, rng)
    return _plain_crawl(images, out, user_names, rng)


class _PinWriter:
    """Writes pins (folder, image copy, pin.json) with unique seeded ids and creation times."""

    def __init__(self, out: Path, rng: random.Random):
        self.out, self.rng, self.used_ids = out, rng, set()
        self.start = datetime(2019, 1, 1, tzinfo=timezone.utc)

    def write(self, user: str, slug: str, entry, description: str, extra: dict) -> str:
        rng = self.rng
        pin_id = str(rng.randrange(10**17, 10**18))
        while pin_id in self.used_ids:
            pin_id = str(rng.randrange(10**17, 10**18))
        self.used_ids.add(pin_id)
        pin_dir = self.out / user / slug / pin_id
        pin_dir.mkdir(parents=True)
        name = os.path.basename(entry.rel)
        shutil.copyfile(entry.abspath, os.path.join(os.fsencode(pin_dir), name))
        created = self.start + timedelta(seconds=rng.randrange(0, 5 * 365 * 24 * 3600))
        metadata = {
            "id": pin_id,
            "description": description,
            "image_url": f"https://i.example.invalid/originals/{pin_id}/{display(name)}",
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            **extra,
        }
        (pin_dir / "pin.json").write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return pin_id


def _new_board(rng: random.Random, user_boards: list[dict], category: str) -> dict:
    """A board filed under ``category`` with a seeded title and a slug unique among the user's boards."""
    title = rng.choice(_BOARD_TITLES).format(name=category.replace("_", " "))
    slug = _slug(title)
    taken = {board["slug"] for board in user_boards}
    base, suffix = slug, 2
    while slug in taken:
        slug, suffix = f"{base}-{suffix}", suffix + 1
    board = {"slug": slug, "name": title, "category": category}
    user_boards.append(board)
    return board


def _write_boards(out: Path, boards: dict[str, list[dict]]) -> None:
    for user, items in boards.items():
        (out / user).mkdir(parents=True, exist_ok=True)
        text = json.dumps(items, indent=2, ensure_ascii=False) + "\n"
        (out / user / "boards.json").write_text(text, encoding="utf-8")


def _plain_crawl(images: list, out: Path, user_names: list[str], rng: random.Random) -> dict:
    """Every image on a board of its own category, owned by a user drawn at random (one or two boards per category)."""
    boards: dict[str, list[dict]] = {name: [] for name in user_names}
    board_of: dict[tuple[str, str], list[dict]] = {}
    writer = _PinWriter(out, rng)
    out.mkdir(parents=True, exist_ok=True)
    for entry in images:
        user = rng.choice(user_names)
        category = entry.category
        key = (user, category)
        if key not in board_of:
            board_of[key] = [_new_board(rng, boards[user], category) for _ in range(1 + (rng.random() < 0.3))]
        board = rng.choice(board_of[key])
        name = os.path.basename(entry.rel)
        writer.write(user, board["slug"], entry, f"{display(name)} ({category})", {"source_path": entry.path})
    _write_boards(out, boards)
    return {"pins": len(images), "boards": sum(len(items) for items in boards.values()), "users": len(user_names)}


def _noisy_crawl(images: list, out: Path, user_names: list[str], settings: NoiseSettings, rng: random.Random) -> dict:
    """Boards planned by :func:`plan_boards`; the truth of every pin goes to ``OUT/truth.parquet``."""
    import pandas as pd

    from pintopic.runio import write_parquet

    by_category: dict[str, list] = {}
    for entry in images:
        by_category.setdefault(entry.category, []).append(entry)
    planned = plan_boards(by_category, user_names, settings, rng)
    boards: dict[str, list[dict]] = {name: [] for name in user_names if any(b.user == name for b in planned)}
    writer, truth = _PinWriter(out, rng), []
    out.mkdir(parents=True, exist_ok=True)
    for plan in planned:
        board = _new_board(rng, boards[plan.user], plan.listed)
        for pin in plan.pins:
            pin_id = writer.write(plan.user, board["slug"], pin.image, display(os.path.basename(pin.image.rel)), {})
            truth.append({"user": plan.user, "board": board["slug"], "pin": pin_id, "category": pin.category,
                          "listed_category": plan.listed, "off_theme": pin.off_theme, "wrong_board": plan.wrong,
                          "source_path": pin.image.path})
    _write_boards(out, boards)
    write_parquet(out / TRUTH_FILE, pd.DataFrame(truth))
    return {"pins": len(truth), "boards": len(planned), "users": len(boards), "unused": len(images) - len(truth),
            "off_theme_pins": sum(row["off_theme"] for row in truth), "wrong_boards": sum(b.wrong for b in planned),
            "truth": str(out / TRUTH_FILE)}
