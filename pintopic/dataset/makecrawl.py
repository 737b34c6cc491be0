"""``pintopic make-crawl``: turn a folders dataset into a synthetic crawl of the study's shape.

Every image of ``FOLDERS_SOURCE/<category>/**`` becomes one pin: it goes to a user drawn at random
(seeded), onto one of that user's boards for its category (a user has one or two boards per
category), in ``OUT/<user>/<board slug>/<pin id>/`` with a ``pin.json`` and a copy of the image.
Each user's ``boards.json`` lists the boards with their category (the source folder name, as
written). Ingesting the crawl gives every pin its board's category, i.e. its source folder's.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pintopic.dataset.layouts import display, scan_folders
from pintopic.errors import PintopicError

_BOARD_TITLES = ("{name}", "{name} ideas", "My {name}", "{name} inspiration", "Best of {name}", "{name} board")


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "board"


def make_crawl(folders_source, out, *, users: int = 20, seed: int = 0) -> dict:
    """Write a crawl made from ``folders_source`` to ``out``; returns ``{"pins", "boards", "users"}`` counts."""
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
    boards: dict[str, list[dict]] = {name: [] for name in user_names}
    board_of: dict[tuple[str, str], list[dict]] = {}
    used_pin_ids: set[str] = set()
    start = datetime(2019, 1, 1, tzinfo=timezone.utc)
    pins = 0
    out.mkdir(parents=True, exist_ok=True)
    for entry in images:
        user = rng.choice(user_names)
        category = entry.category
        key = (user, category)
        if key not in board_of:
            board_of[key] = []
            for _ in range(1 + (rng.random() < 0.3)):
                title = rng.choice(_BOARD_TITLES).format(name=category.replace("_", " "))
                slug = _slug(title)
                taken = {board["slug"] for board in boards[user]}
                base, suffix = slug, 2
                while slug in taken:
                    slug, suffix = f"{base}-{suffix}", suffix + 1
                board = {"slug": slug, "name": title, "category": category}
                boards[user].append(board)
                board_of[key].append(board)
        board = rng.choice(board_of[key])
        pin_id = str(rng.randrange(10**17, 10**18))
        while pin_id in used_pin_ids:
            pin_id = str(rng.randrange(10**17, 10**18))
        used_pin_ids.add(pin_id)
        pin_dir = out / user / board["slug"] / pin_id
        pin_dir.mkdir(parents=True)
        name = os.path.basename(entry.rel)
        shutil.copyfile(entry.abspath, os.path.join(os.fsencode(pin_dir), name))
        created = start + timedelta(seconds=rng.randrange(0, 5 * 365 * 24 * 3600))
        metadata = {
            "id": pin_id,
            "description": f"{display(name)} ({category})",
            "image_url": f"https://i.example.invalid/originals/{pin_id}/{display(name)}",
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "source_path": entry.path,
        }
        (pin_dir / "pin.json").write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        pins += 1
    for user in user_names:
        (out / user).mkdir(exist_ok=True)
        text = json.dumps(boards[user], indent=2, ensure_ascii=False) + "\n"
        (out / user / "boards.json").write_text(text, encoding="utf-8")
    return {"pins": pins, "boards": sum(len(items) for items in boards.values()), "users": len(user_names)}
