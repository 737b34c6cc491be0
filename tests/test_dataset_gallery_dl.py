"""gallery-dl's Pinterest downloads read as a collection, and board -> category maps (``--categories``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_image

from pintopic.categories import read_category_map
from pintopic.dataset import ingest, load_manifest
from pintopic.dataset.layouts import detect_layout, scan
from pintopic.errors import PintopicError

REPO = Path(__file__).resolve().parent.parent
_seed = iter(range(500, 10_000))


def downloaded(folder: Path, name: str, metadata: dict | str | None = None) -> None:
    """An image as gallery-dl saves it, with its metadata file ``<name>.json`` (``--write-metadata``)."""
    make_image(folder / name, seed=next(_seed))
    if metadata is not None:
        (folder / f"{name}.json").write_text(metadata if isinstance(metadata, str) else json.dumps(metadata, indent=4))


def pin_metadata(pin_id: str, board: dict | None, **extra) -> dict:
    """A pin's metadata as gallery-dl writes it: the top-level ``category`` is gallery-dl's extractor name."""
    data = {"id": pin_id, "grid_title": f"Pin {pin_id}", "description": "", "created_at": "Mon, 01 Jan 2024 10:00:00 +0000",
            "dominant_color": "#aabbcc", "images": {"orig": {"url": f"https://i.pinimg.com/originals/{pin_id}.jpg"}},
            "category": "pinterest", "subcategory": "board", "extension": "jpg", **extra}
    if board is not None:
        data["board"] = board
    return data


@pytest.fixture
def gallery_dl(tmp_path: Path) -> Path:
    """tmp/dl/gallery-dl/pinterest/{owner}/{board}/[{section}/]pinterest_{id}[_{media}].{ext}, drifting field sets."""
    base = tmp_path / "dl" / "gallery-dl" / "pinterest"
    recipes = {"id": "5001", "name": "Recipes", "url": "/alice/recipes/", "owner": {"username": "alice"}, "category": "Food & Drink"}
    cats = {"id": "5002", "name": "Cats", "url": "/alice/cats/", "owner": {"username": "alice"}}
    downloaded(base / "alice" / "Recipes", "pinterest_101.jpg", pin_metadata("101", recipes))
    downloaded(base / "alice" / "Recipes", "pinterest_102.jpg", pin_metadata("102", recipes))
    downloaded(base / "alice" / "Cats" / "Kittens", "pinterest_201.jpg",
               pin_metadata("201", cats, section={"id": "77", "title": "Kittens"}))
    downloaded(base / "alice" / "Cats", "pinterest_202.png", pin_metadata("202", cats))
    for media in ("a1b2", "c3d4"):  # a multi-image pin from an older version: no board object at all
        downloaded(base / "bob" / "Trips", f"pinterest_301_{media}.jpg", pin_metadata("301", None, media_id=media))
    downloaded(base / "bob" / "Trips", "pinterest_302.jpg")  # downloaded without --write-metadata
    misc = {"id": "5004", "name": "Misc", "owner": {"username": "carol"}, "category": None}
    downloaded(base / "carol" / "Misc", "pinterest_401.jpg", pin_metadata("401", misc))
    downloaded(base / "carol" / "Misc", "pinterest_402.jpg", "{ cut short")
    (base / "carol" / "Misc" / "pinterest_403.jpg.part").write_bytes(b"\xff\xd8 partial")
    (base / "carol" / "Misc" / "pinterest_404_text.txt").write_text("a story's text block")
    return tmp_path / "dl"


@pytest.fixture
def category_map(tmp_path: Path) -> Path:
    path = tmp_path / "map.csv"
    path.write_text("board_id,owner,board,category\n5002,,,Animals\n,BOB, trips ,Travel\n,carol,Recipes,art\n")
    return path


def test_gallery_dl_is_detected_from_any_of_its_folders(gallery_dl: Path, tmp_path: Path):
    for source in (gallery_dl, gallery_dl / "gallery-dl", gallery_dl / "gallery-dl" / "pinterest"):
        assert detect_layout(source) == "gallery-dl"
    owners = gallery_dl / "gallery-dl" / "pinterest"
    renamed = tmp_path / "my-downloads"
    owners.rename(renamed)
    assert detect_layout(renamed) == "folders"  # only gallery-dl's own "pinterest" folder is taken as proof
    listing = scan(renamed, "gallery-dl")
    assert {entry.user for entry in listing.entries} == {"alice", "bob", "carol"}


def test_gallery_dl_downloads_ingest_with_users_boards_pins_and_categories(gallery_dl: Path, category_map: Path, tmp_path: Path):
    ingest(gallery_dl, tmp_path / "run", categories=category_map, min_per_category=1, progress=False)
    manifest = load_manifest(tmp_path / "run")
    rows = {row.path.split("/", 2)[-1]: row for row in manifest.itertuples()}
    expected = {
        "alice/Recipes/pinterest_101.jpg": ("alice", "Recipes", "101", "food_drink", "ok"),
        "alice/Recipes/pinterest_102.jpg": ("alice", "Recipes", "102", "food_drink", "ok"),
        "alice/Cats/Kittens/pinterest_201.jpg": ("alice", "Cats", "201", "animals", "ok"),
        "alice/Cats/pinterest_202.png": ("alice", "Cats", "202", "animals", "ok"),
        "bob/Trips/pinterest_301_a1b2.jpg": ("bob", "Trips", "301", "travel", "ok"),
        "bob/Trips/pinterest_301_c3d4.jpg": ("bob", "Trips", "301", "travel", "ok"),
        "bob/Trips/pinterest_302.jpg": ("bob", "Trips", "302", "travel", "ok"),
        "carol/Misc/pinterest_401.jpg": ("carol", "Misc", "401", None, "no_category"),
        "carol/Misc/pinterest_402.jpg": ("carol", "Misc", "402", None, "bad_metadata"),
    }
    assert {path: (r.user, r.board, r.pin, r.category if isinstance(r.category, str) else None, r.status)
            for path, r in rows.items()} == expected
    assert "pinterest_402.jpg.json is not valid JSON" in rows["carol/Misc/pinterest_402.jpg"].reason_detail
    assert "no category in pinterest_401.jpg.json, nor in" in rows["carol/Misc/pinterest_401.jpg"].reason_detail
    assert all(path.startswith("gallery-dl/pinterest/") for path in manifest["path"])
    assert all(os.fsdecode(bytes(a)).startswith(str(gallery_dl.resolve())) for a in manifest["abspath"])  # read in place
    assert not list((tmp_path / "run").rglob("*.jpg"))  # no copies
    record = json.loads((tmp_path / "run" / "dataset" / "dataset.json").read_text())
    assert record["layout"] == "gallery-dl" and record["arguments"]["categories"] == str(category_map)
    assert record["counts"]["ignored_files"] == 2  # the .part download and the story text; metadata is not counted


def test_without_a_map_boards_without_category_are_no_category(gallery_dl: Path, tmp_path: Path):
    ingest(gallery_dl, tmp_path / "run", min_per_category=1, progress=False)
    manifest = load_manifest(tmp_path / "run")
    assert sorted(manifest.loc[manifest["status"] == "ok", "category"]) == ["food_drink", "food_drink"]
    trips = manifest[manifest["board"] == "Trips"]
    assert set(trips["status"]) == {"no_category"}
    assert all("no --categories map was given" in detail for detail in trips["reason_detail"])


def test_a_collected_crawl_takes_its_labels_from_the_map_at_ingest(tmp_path: Path):
    crawl = tmp_path / "crawl"
    (crawl / "ann").mkdir(parents=True)
    (crawl / "ann" / "boards.json").write_text(json.dumps([
        {"slug": "9001", "id": "9001", "name": "Dogs", "category": None},
        {"slug": "9002", "id": "9002", "name": "Garden", "category": None},
        {"slug": "9003", "id": "9003", "name": "Cakes", "category": "Food & Drink"}]))
    for slug, pin in (("9001", "1"), ("9002", "2"), ("9003", "3")):
        make_image(crawl / "ann" / slug / pin / f"{pin}.jpg", seed=next(_seed))
    (tmp_path / "map.csv").write_text("category,board_id,owner,board\nanimals,9001,,\ngardening,,ann,garden\nart,9003,,\n")
    result = subprocess.run([sys.executable, "-m", "pintopic", "ingest", str(crawl), str(tmp_path / "run"), "--categories",
                             str(tmp_path / "map.csv"), "--min-per-category", "1", "--quiet"],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    manifest = load_manifest(tmp_path / "run")
    assert dict(zip(manifest["board"], manifest["category"])) == {"9001": "animals", "9002": "gardening", "9003": "food_drink"}


@pytest.mark.parametrize("text, message", [
    ("board,category\nx,art\n", "needs a 'category' column and a 'board_id' column"),
    ("board_id,category\n1,art\n2,\n", "line 3: empty category"),
    ("board_id,owner,board,category\n,ann,,art\n", "line 2: give a board_id, or an owner and a board name"),
    ("board_id,category\n7,art\n7,Animals\n", "line 3: board id 7 is given two categories (art and animals)"),
])
def test_a_bad_category_map_is_refused_naming_the_line(text, message, tmp_path: Path):
    path = tmp_path / "map.csv"
    path.write_text(text)
    with pytest.raises(PintopicError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_category_map(path)


def test_a_study_config_names_the_map_relative_to_itself(tmp_path: Path):
    from pintopic.config import load_config

    (tmp_path / "study.toml").write_text('[dataset]\nsource = "gallery-dl"\ncategories = "labels/map.csv"\n')
    config = load_config(tmp_path / "study.toml")
    assert config["dataset"]["categories"] == str(tmp_path / "labels" / "map.csv")
    assert load_config(tmp_path / "study.toml", ["dataset.categories="])["dataset"]["categories"] == ""
