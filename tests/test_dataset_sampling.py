"""Per-category sampling, the distribution outputs, make-crawl and the CLI."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_image
from PIL import Image

from pintopic.dataset import (
    distribution_png,
    ingest,
    load_manifest,
    load_sample,
    make_crawl,
)
from pintopic.dataset.sampling import select_sample


def test_draw_depends_only_on_seed_category_and_ids():
    ids = [f"{i:040x}" for i in range(200)]
    base, _, _ = select_sample([(i, "a") for i in ids], per_category=20, min_per_category=5, seed=1)
    # another order, and another category's rows mixed in: category a's draw is the same
    mixed = [(i, "a") for i in reversed(ids)] + [(f"{i:040x}", "b") for i in range(300, 400)]
    again, _, counts = select_sample(mixed, per_category=20, min_per_category=5, seed=1)
    grown, _, _ = select_sample([(i, "a") for i in ids], per_category=40, min_per_category=5, seed=1)
    other_seed, _, _ = select_sample([(i, "a") for i in ids], per_category=20, min_per_category=5, seed=2)
    assert [i for i in again if i in set(ids)] == base and counts == {"a": 20, "b": 20}
    assert set(base) <= set(grown)
    assert set(base) != set(other_seed)
    assert base == sorted(base)


def test_small_categories_are_left_out_with_a_warning(tmp_path: Path, capsys):
    source = tmp_path / "src"
    for i in range(6):
        make_image(source / "big" / f"{i}.png", seed=i)
    for i in range(2):
        make_image(source / "tiny" / f"{i}.png", seed=100 + i)
    record = ingest(source, tmp_path / "run", min_per_category=5, workers=1, progress=False)
    assert record["sample"]["left_out"] == {"tiny": 2}
    assert set(load_sample(tmp_path / "run")["category"]) == {"big"}
    assert "'tiny' has 2 ok images" in capsys.readouterr().err
    csv = pd.read_csv(tmp_path / "run" / "dataset" / "distribution.csv")
    assert csv.to_dict("records") == [{"category": "big", "count": 6, "found": 6, "sampled": 6},
                                      {"category": "tiny", "count": 2, "found": 2, "sampled": 0}]


def test_sample_rows_match_the_manifest(tiny_folders: Path, tmp_path: Path):
    ingest(tiny_folders, tmp_path / "run", per_category=5, seed=7, workers=1, progress=False)
    manifest, sample = load_manifest(tmp_path / "run"), load_sample(tmp_path / "run")
    assert list(sample.columns) == list(manifest.columns)
    assert len(sample) == 15 and set(sample["status"]) == {"ok"}
    assert sample["category"].value_counts().to_dict() == {"blue": 5, "green": 5, "red": 5}
    merged = sample.merge(manifest, on="image_id", suffixes=("", "_m"))
    assert (merged["path"] == merged["path_m"]).all()


def test_distribution_png_is_legible_and_deterministic():
    from pintopic.categories import CANONICAL

    counts = {name: 40 + 37 * i for i, name in enumerate(CANONICAL)} | {"a_very_long_custom_category_name": 3}
    png = distribution_png(counts, left_out=["a_very_long_custom_category_name"], min_per_category=5)
    assert png == distribution_png(dict(reversed(list(counts.items()))), left_out=["a_very_long_custom_category_name"],
                                   min_per_category=5)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.height >= 33 * 0.26 * 110  # room for one label per category
    assert Image.open(io.BytesIO(distribution_png({}))).format == "PNG"


def test_make_crawl_round_trip(tiny_folders: Path, tmp_path: Path):
    crawl = tmp_path / "crawl"
    summary = make_crawl(tiny_folders, crawl, users=4, seed=1)
    assert summary["pins"] == 36 and summary["users"] == 4 and summary["boards"] >= 3
    again = make_crawl(tiny_folders, tmp_path / "crawl2", users=4, seed=1)
    assert again == summary
    assert sorted(p.relative_to(crawl) for p in crawl.rglob("*")) == \
        sorted(p.relative_to(tmp_path / "crawl2") for p in (tmp_path / "crawl2").rglob("*"))
    record = ingest(crawl, tmp_path / "run", workers=1, progress=False)
    assert record["layout"] == "crawl"
    manifest = load_manifest(tmp_path / "run")
    assert len(manifest) == 36 and set(manifest["status"]) == {"ok"}
    for _, row in manifest.iterrows():
        boards = json.loads((crawl / row["user"] / "boards.json").read_text())
        board = next(b for b in boards if b["slug"] == row["board"])
        pin_meta = json.loads((crawl / row["user"] / row["board"] / row["pin"] / "pin.json").read_text())
        assert row["category"] == board["category"] == pin_meta["source_path"].split("/")[0]
    assert sorted(manifest["sha256"]) == sorted(load_manifest(_folders_run(tiny_folders, tmp_path))["sha256"])


def _folders_run(source: Path, tmp_path: Path) -> Path:
    run = tmp_path / "folders-run"
    ingest(source, run, workers=1, progress=False)
    return run


def test_make_crawl_refuses_a_non_empty_output(tiny_folders: Path, tmp_path: Path):
    from pintopic.errors import PintopicError

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    with pytest.raises(PintopicError, match="not empty"):
        make_crawl(tiny_folders, tmp_path / "out")


def test_cli_make_crawl_and_ingest(tiny_folders: Path, tmp_path: Path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pintopic", *args], capture_output=True, text=True, timeout=300)

    made = run("make-crawl", str(tiny_folders), str(tmp_path / "crawl"), "--users", "3", "--seed", "2")
    assert made.returncode == 0, made.stderr
    assert "wrote a crawl of 36 pins" in made.stdout and "3 users" in made.stdout
    done = run("ingest", str(tmp_path / "crawl"), str(tmp_path / "run"), "--per-category", "4", "--seed", "1",
               "--workers", "2", "--exclude", "none,other,blue", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "36 files found, 24 ok" in done.stdout and "excluded_category 12" in done.stdout
    assert len(load_sample(tmp_path / "run")) == 8
    bad = run("ingest", str(tmp_path / "missing"), str(tmp_path / "run2"))
    assert bad.returncode == 2 and "does not exist" in bad.stderr
