"""The hostile folders corpus (tests/hostile.py) through ``pintopic run``, ``predict``, ``report`` and every door's
refusals, as real CLI processes.

``pintopic run`` with the study's defaults (min 5 per category, 80/20 split, 5-fold CV) on category names that
break naive CSV and pandas code, a 1,100-level tree, a doubling symlink chain, a symlink loop, a pipe and a device
among the images, and the run folder inside its own source: every file gets its status, every name survives
every file written and read, the category too small for the folds is dropped with a warning, nothing outside the
run folder changes, no command hangs (timeouts) or peaks above 1 GB. Each refusal is one line, exit 2.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hostile import (
    CHAIN_LEVELS,
    ODD_CATEGORIES,
    SMALL_CATEGORY,
    build_hostile_folders,
    remove_tree,
    tree_snapshot,
)
from test_reliability_hostile import (
    BACKBONE,
    RUN_PEAK_RSS_LIMIT,
    assert_clean,
    assert_one_line_error,
    pintopic_cli,
)

from pintopic.dataset import load_manifest
from pintopic.runio import read_json
from pintopic.safeio import read_csv_text

STUDY = """
[run]
folder = "{run}"
[dataset]
source = "{source}"
layout = "folders"
[features]
backbones = ["{backbone}"]
pretrained = false
batch_size = 8
workers = 1
[classify]
classifiers = ["knn", "lsvm"]
[classify.grids.knn]
k = [1, 3]
[classify.grids.lsvm]
C = [1.0]
"""
NAMES = sorted(name.strip() for name in ODD_CATEGORIES)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The folders corpus taken through ``pintopic run`` (the run folder inside the source), and its output."""
    base = tmp_path_factory.mktemp("hostile-run")
    source, expected = build_hostile_folders(base)
    try:  # pytest's own cleanup recurses and cannot delete 1,100 levels: remove them whatever happens
        run = source / "zz-run"
        config = base / "study.toml"
        config.write_text(STUDY.format(run=json.dumps(str(run))[1:-1], source=json.dumps(str(source))[1:-1],
                                       backbone=BACKBONE))
        before = tree_snapshot(base)
        peaks: dict[str, int] = {}
        result = pintopic_cli("run", str(config), "--quiet", timeout=600)
        assert_clean("run", result, peaks, limit=RUN_PEAK_RSS_LIMIT)
        assert tree_snapshot(base, skip=(run,)) == before, "pintopic run changed something outside its run folder"
        yield base, source, run, expected, result, peaks
    finally:
        remove_tree(source / "hats, caps" / "d")


@pytest.mark.timeout(900)
def test_every_file_gets_its_status_and_every_name_survives_every_file(study):
    _, source, run, expected, (_, out, err, _), peaks = study
    manifest = load_manifest(run).set_index("path")
    assert {path: (row["status"], row["category"]) for path, row in manifest.iterrows()} == expected
    assert not manifest.index.str.startswith("zz-run").any()
    record = read_json(run / "dataset" / "dataset.json")
    assert sum("listed once" in line for line in record["ignored_dirs"]) >= CHAIN_LEVELS - 2  # capped list
    assert any(line.startswith("zz-run (a pintopic run folder") for line in record["ignored_dirs"])
    distribution = read_csv_text(run / "dataset" / "distribution.csv")
    assert sorted(distribution["category"]) == sorted([*NAMES, SMALL_CATEGORY])
    results = read_json(run / "results" / "results.json")
    assert results["categories"] == NAMES
    assert results["split"]["dropped_categories"] == {SMALL_CATEGORY: "4 training images, too few"}
    assert f"category '{SMALL_CATEGORY}' has 4 training images" in err
    for row in results["rows"]:
        confusion = read_csv_text(run / "results" / "confusion" / f"{row['key']}__{row['classifier']}.csv", index_col=0)
        assert list(confusion.index) == list(confusion.columns) == NAMES
        assert confusion.astype(int).to_numpy().sum() == row["n_test"]
    html = (run / "report.html").read_text()
    assert "This report is partial" not in html
    for name in NAMES:
        assert name.replace('"', "&quot;") in html, name
    print("peak RSS MiB:", {step: round(value / 2**20) for step, value in peaks.items()})


@pytest.mark.timeout(600)
def test_predict_answers_hostile_inputs_one_by_one(study):
    base, source, run, expected, _, peaks = study
    model = next((run / "results" / "models").glob("*__knn"))
    (base / "pipe.png").exists() or os.mkfifo(base / "pipe.png")
    inputs = [source / "123", base / "pipe.png", source / "NA" / "zero.jpg", source / "NA" / "loop.png",
              source / "hats, caps" / "d"]
    before = tree_snapshot(base)
    result = pintopic_cli("predict", str(model), *map(str, inputs), "--format", "json", timeout=300)
    assert_clean("predict", result, peaks)
    assert tree_snapshot(base) == before
    answers = {Path(answer["path"]).name: answer for answer in json.loads(result[1])}
    assert sorted(answers) == sorted([*(f"{i}.png" for i in range(8)), "renamed.avif", "renamed.ico", "renamed.jfif",
                                      "renamed.jpe", "pipe.png", "zero.jpg", "loop.png", "bottom.png"])
    assert answers["pipe.png"]["error"] == "not_an_image: not a regular file: a named pipe (FIFO)"
    assert answers["zero.jpg"]["error"] == "not_an_image: not a regular file: a character device"
    assert answers["loop.png"]["error"].startswith("missing_image: symlink loop")
    assert all(answers[name]["top"][0]["category"] in NAMES for name in answers if name.startswith(("renamed", "bottom")))


@pytest.mark.timeout(600)
def test_reruns_and_report_touch_nothing_outside_the_run(study):
    base, source, run, _, _, peaks = study
    before = tree_snapshot(base, skip=(run,))
    ingest = pintopic_cli("ingest", str(source), str(run), "--layout", "folders", "--quiet")
    assert_clean("ingest again", ingest, peaks)
    assert "dataset is up to date" in ingest[1]  # the run folder's own outputs did not become input
    assert_clean("report", pintopic_cli("report", str(run)), peaks)
    assert tree_snapshot(base, skip=(run,)) == before


@pytest.mark.timeout(600)
def test_every_door_refuses_bad_input_with_one_line(study, tmp_path):
    base, source, run, _, _, _ = study
    model = next((run / "results" / "models").glob("*__knn"))
    image = source / "123" / "0.png"
    (tmp_path / "empty").mkdir()
    (tmp_path / "weights.pth").write_text("these are not weights\n")
    edited = tmp_path / "edited-model"
    edited.mkdir()
    info = json.loads((model / "model.json").read_text())
    info["backbone"]["spec"] = "timm:test_efficientnet_gn"
    (edited / "model.json").write_text(json.dumps(info))
    (edited / "model.npz").write_bytes((model / "model.npz").read_bytes())
    config = tmp_path / "bad.toml"
    config.write_text(f'[run]\nfolder = "{tmp_path / "new-run"}"\n[dataset]\nsource = "{source}"\nper_category = "lots"\n')
    doors = [
        ("predict an empty folder", ("predict", str(model), str(tmp_path / "empty")), "no images found"),
        ("predict --top-k 0", ("predict", str(model), str(image), "--top-k", "0"), "--top-k must be a whole number"),
        ("predict an edited model", ("predict", str(edited), str(image)), "does not match its checksum"),
        ("report a folder that is not a run", ("report", str(source)), "is not a pintopic run folder"),
        ("run a bad config", ("run", str(config)), "config key dataset.per_category must be a whole number"),
        ("evaluate --cv 1", ("evaluate", str(run), "--cv", "1"), "--cv must be a whole number of at least 2"),
        ("extract --weights text", ("extract", str(run), "--backbone", BACKBONE, "--weights", str(tmp_path / "weights.pth")),
         "is neither a PyTorch checkpoint"),
        ("ingest a pipe", ("ingest", str(base / "pipe.png"), str(tmp_path / "r")), "neither a folder nor a table file"),
    ]
    (base / "pipe.png").exists() or os.mkfifo(base / "pipe.png")
    before = tree_snapshot(base, skip=(run,))  # extract and evaluate take the run's lock before refusing
    for step, args, message in doors:
        assert_one_line_error(step, pintopic_cli(*args, timeout=300), message)
    assert tree_snapshot(base, skip=(run,)) == before
    assert not (tmp_path / "new-run").exists() and not (tmp_path / "r").exists()
