"""The crawl and table layouts, their metadata statuses, auto-detection and symlinked folders."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_image

from pintopic.dataset import ingest, load_manifest
from pintopic.dataset.layouts import detect_layout, scan
from pintopic.errors import PintopicError

_seed = iter(range(10_000))


def pin(board_dir: Path, pin_id: str, *, metadata="{}", image: str | None = "image.jpg") -> None:
    folder = board_dir / pin_id
    folder.mkdir(parents=True)
    if metadata is not None:
        (folder / "pin.json").write_text(metadata if isinstance(metadata, str) else json.dumps(metadata))
    if image:
        make_image(folder / image, seed=next(_seed))


@pytest.fixture
def crawl(tmp_path: Path) -> Path:
    root = tmp_path / "crawl"
    alice = root / "alice"
    alice.mkdir(parents=True)
    (alice / "boards.json").write_text(json.dumps([
        {"slug": "cats", "name": "Cats", "category": "Animals"},
        {"slug": "recipes", "category": "Food & Drink"},
        {"slug": "misc", "name": "Misc"},
        {"slug": "junk", "category": "other"},
        {"name": "an entry without slug"},
    ]))
    pin(alice / "cats", "111", metadata={"description": "a cat", "image_url": "https://x/1.jpg", "created_at": "2019-01-01"})
    pin(alice / "cats", "112", image=None)
    pin(alice / "cats", "113", metadata="{not json")
    pin(alice / "cats", "114", metadata=None)  # pin.json is optional
    pin(alice / "recipes", "211", image="cake photo.png")
    pin(alice / "misc", "311")
    pin(alice / "unlisted", "411")
    pin(alice / "junk", "511")
    bob = root / "bob"
    bob.mkdir()
    (bob / "boards.json").write_text('{"this is": "not a list"}')
    pin(bob / "travel", "611")
    carol = root / "carol"
    carol.mkdir()
    (carol / "boards.json").write_text("[{")
    (root / "notes.txt").write_text("stray file at the top")
    return root


def test_crawl_statuses(crawl: Path, tmp_path: Path):
    assert detect_layout(crawl) == "crawl"
    record = ingest(crawl, tmp_path / "run", workers=1, min_per_category=1, progress=False)
    assert record["layout"] == "crawl"
    rows = load_manifest(tmp_path / "run").set_index("path")
    status = rows["status"].to_dict()
    assert status == {
        "alice/cats/111/image.jpg": "ok",
        "alice/cats/112": "missing_image",
        "alice/cats/113/image.jpg": "bad_metadata",
        "alice/cats/114/image.jpg": "ok",
        "alice/recipes/211/cake photo.png": "ok",
        "alice/misc/311/image.jpg": "no_category",
        "alice/unlisted/411/image.jpg": "no_category",
        "alice/junk/511/image.jpg": "excluded_category",
        "bob/travel/611/image.jpg": "bad_metadata",
        "carol/boards.json": "bad_metadata",
    }
    ok = rows.loc["alice/cats/111/image.jpg"]
    assert (ok["user"], ok["board"], ok["pin"], ok["category"]) == ("alice", "cats", "111", "animals")
    assert rows.loc["alice/recipes/211/cake photo.png", "category"] == "food_drink"
    assert "not valid JSON" in rows.loc["alice/cats/113/image.jpg", "reason_detail"]
    assert "not listed" in rows.loc["alice/unlisted/411/image.jpg", "reason_detail"]
    assert "no category" in rows.loc["alice/misc/311/image.jpg", "reason_detail"]
    assert "not a list" in rows.loc["bob/travel/611/image.jpg", "reason_detail"]
    assert rows.loc["alice/cats/112", "pin"] == "112"
    assert record["counts"]["ignored_files"] == 1
    assert record["counts"]["by_category"] == {"animals": 2, "food_drink": 1}


def test_crawl_symlinked_board_inside_and_outside(tmp_path: Path):
    root = tmp_path / "crawl"
    (root / "u").mkdir(parents=True)
    (root / "u" / "boards.json").write_text(json.dumps([{"slug": "a", "category": "art"}, {"slug": "b", "category": "art"},
                                                        {"slug": "far", "category": "art"}]))
    pin(root / "u" / "a", "1")
    os.symlink("a", root / "u" / "b")  # a board folder symlinked inside the root: the same folder, listed once
    pin(tmp_path / "elsewhere", "9")
    os.symlink(tmp_path / "elsewhere", root / "u" / "far")
    record = ingest(root, tmp_path / "run", workers=1, min_per_category=1, progress=False)
    status = load_manifest(tmp_path / "run").set_index("path")["status"].to_dict()
    assert status == {"u/a/1/image.jpg": "ok", "u/far": "outside_root"}
    assert record["ignored_dirs"] == ["u/b (same folder as u/a, listed once)"]


def _table_source(tmp_path: Path) -> tuple[Path, list[dict]]:
    data = tmp_path / "data"
    make_image(data / "images" / "one.png", seed=1)
    make_image(data / "images" / "two.png", seed=2)
    make_image(data / "images" / "three.png", seed=3)
    make_image(tmp_path / "outside" / "abs.png", seed=4)
    rows = [
        {"path": "images/one.png", "category": "Home Decor", "user": "u1", "board": "b1", "pin": "p1"},
        {"path": "images/two.png", "category": "travel", "user": "u2", "board": "", "pin": ""},
        {"path": str(tmp_path / "outside" / "abs.png"), "category": "travel", "user": "", "board": "", "pin": ""},
        {"path": "images/missing.png", "category": "travel", "user": "", "board": "", "pin": ""},
        {"path": "images/three.png", "category": "", "user": "", "board": "", "pin": ""},
        {"path": "images/two.png", "category": "travel", "user": "u2", "board": "", "pin": ""},  # repeated row
    ]
    return data, rows


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_table_layout(tmp_path: Path, kind: str):
    data, rows = _table_source(tmp_path)
    table = data / f"list.{kind}"
    frame = pd.DataFrame(rows)
    frame.to_csv(table, index=False) if kind == "csv" else frame.to_parquet(table, index=False)
    assert detect_layout(table) == "table"
    record = ingest(table, tmp_path / "run", workers=1, min_per_category=1, progress=False)
    manifest = load_manifest(tmp_path / "run").set_index("path")
    abs_path = str(tmp_path / "outside" / "abs.png")
    assert manifest["status"].to_dict() == {
        "images/one.png": "ok", "images/two.png": "ok", abs_path: "ok",
        "images/missing.png": "missing_image", "images/three.png": "no_category",
    }
    assert manifest.loc["images/one.png", "category"] == "home_decor"
    assert (manifest.loc["images/one.png", "user"], manifest.loc["images/one.png", "pin"]) == ("u1", "p1")
    assert pd.isna(manifest.loc["images/two.png", "board"])
    assert record["counts"]["found"] == 5
    assert any("repeat" in note for note in record["notes"])


def test_table_gives_one_path_two_categories(tmp_path: Path):
    make_image(tmp_path / "x.png", seed=5)
    (tmp_path / "t.csv").write_text("path,category\nx.png,art\nx.png,travel\n")
    ingest(tmp_path / "t.csv", tmp_path / "run", workers=1, min_per_category=1, progress=False)
    row = load_manifest(tmp_path / "run").iloc[0]
    assert row["status"] == "conflict" and "art, travel" in row["reason_detail"]


def test_table_errors(tmp_path: Path):
    (tmp_path / "t.csv").write_text("file,label\na.png,x\n")
    with pytest.raises(PintopicError, match="lacks the column"):
        ingest(tmp_path / "t.csv", tmp_path / "run", progress=False)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(PintopicError, match="not a CSV or Parquet"):
        ingest(tmp_path / "notes.txt", tmp_path / "run", progress=False)
    with pytest.raises(PintopicError, match="does not exist"):
        ingest(tmp_path / "nowhere", tmp_path / "run", progress=False)


def test_folders_detection_nesting_and_symlinked_folders(tmp_path: Path):
    root = tmp_path / "folders"
    make_image(root / "art" / "deep" / "er" / "a.png", seed=10)
    make_image(root / "Home & Decor" / "b.png", seed=11)
    make_image(tmp_path / "far" / "c.png", seed=12)
    os.symlink(tmp_path / "far", root / "art" / "linked_out")
    os.symlink("..", root / "art" / "loop")
    assert detect_layout(root) == "folders"
    listing = scan(root, "auto")
    got = {entry.path: (entry.category, entry.status) for entry in listing.entries}
    assert got == {"art/deep/er/a.png": ("art", None), "art/linked_out": ("art", "outside_root"),
                   "Home & Decor/b.png": ("home_decor", None)}
    assert any("symlink loop" in item for item in listing.ignored_dirs)


def test_forced_layout_must_fit(tmp_path: Path):
    make_image(tmp_path / "x.png")
    with pytest.raises(PintopicError):
        ingest(tmp_path / "x.png", tmp_path / "run", layout="folders", progress=False)
    with pytest.raises(PintopicError, match="unknown layout"):
        ingest(tmp_path, tmp_path / "run", layout="zip", progress=False)
