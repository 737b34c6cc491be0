"""Issue 17: one regression test per class of hostile input, each failing before its fix.

Special files (pipes, devices, sockets, symlink loops) are made with the real system calls; every test is
bounded by a timeout, so a hang is a failure, not a stuck suite. The same classes go through every CLI entry
point in ``test_reliability_hostile.py`` and ``test_reliability_hostile_run.py``.
"""
from __future__ import annotations

import errno
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image
from hostile import NESTED_JSON, deep_tree, noise, png_bytes, remove_tree
from test_features_extract import FAST, tiny_run

from pintopic.dataset import ingest, load_manifest
from pintopic.errors import PintopicError
from pintopic.runio import read_json
from pintopic.safeio import (
    DiskFullError,
    UnreadableFileError,
    open_regular,
    parse_json,
    parse_toml,
    read_capped,
    read_json_file,
)

pytestmark = pytest.mark.timeout(180)
BACKBONE = "timm:test_efficientnet"


def statuses(run: Path) -> dict[str, tuple[str, str]]:
    manifest = load_manifest(run)
    return {path: (status, detail) for path, status, detail in zip(manifest["path"], manifest["status"],
                                                                  manifest["reason_detail"])}


def crawl_user(root: Path, user: str, boards, pins: dict[str, int]) -> Path:
    """``root/user`` with a boards.json (a JSON value, or a callable that makes the file) and one image per pin."""
    folder = root / user
    folder.mkdir(parents=True)
    if callable(boards):
        boards(folder / "boards.json")
    else:
        (folder / "boards.json").write_text(json.dumps(boards))
    for pin, seed in pins.items():
        make_image(folder / pin / "image.png", seed=seed)
    return folder


# -- 1. special files never block ----------------------------------------------------------------------------

def test_pipes_devices_sockets_and_loops_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(UnreadableFileError, match="not a regular file: a named pipe") as refused:
        read_json_file(fifo)
    assert refused.value.kind == "not_regular"
    with pytest.raises(UnreadableFileError, match="character device"):
        read_capped("/dev/zero", 1024)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock.png"))
    with pytest.raises(UnreadableFileError, match="socket"):
        open_regular(tmp_path / "sock.png")
    server.close()
    os.symlink("loop.png", tmp_path / "loop.png")
    with pytest.raises(UnreadableFileError, match="symlink loop") as looped:
        open_regular(tmp_path / "loop.png")
    assert looped.value.kind == "loop"


def test_a_pipe_as_metadata_or_swapped_for_a_sampled_image_ends_with_a_status(tmp_path):
    root = tmp_path / "crawl"
    crawl_user(root, "ana", [{"slug": "b", "category": "art"}], {f"b/{i}": i for i in range(3)})
    os.mkfifo(root / "ana" / "b" / "1" / "pin.json")
    crawl_user(root, "bob", os.mkfifo, {"b/9": 9})
    ingest(root, tmp_path / "run", workers=1, min_per_category=1, progress=False)
    found = statuses(tmp_path / "run")
    assert found["ana/b/1/image.png"] == ("bad_metadata", "pin.json: not a regular file: a named pipe (FIFO)")
    assert found["bob/b/9/image.png"] == ("bad_metadata", "boards.json: not a regular file: a named pipe (FIFO)")
    assert found["ana/b/0/image.png"][0] == "ok"
    sampled = root / "ana" / "b" / "2" / "image.png"
    sampled.unlink()
    os.mkfifo(sampled)  # swapped in after ingest
    from pintopic.features import extract
    from pintopic.features.pixel_cache import build_pixel_caches

    (cache,) = build_pixel_caches(tmp_path / "run", [BACKBONE], workers=0, progress=False)
    assert cache["failed"] == 1
    (folder,) = extract(tmp_path / "run", BACKBONE, **FAST)
    (failure,) = read_json(folder / "meta.json")["failed"]
    assert failure["status"] == "not_an_image" and "named pipe" in failure["reason"]


# -- 2. no unbounded read ----------------------------------------------------------------------------------

def test_metadata_leading_out_of_the_source_is_never_read_and_sizes_are_capped(tmp_path):
    root = tmp_path / "crawl"
    crawl_user(root, "ana", [{"slug": "b", "category": "art"}], {"b/1": 1, "b/2": 2, "b/3": 3})
    os.symlink("/dev/zero", root / "ana" / "b" / "1" / "pin.json")
    (root / "ana" / "b" / "2" / "pin.json").write_text(json.dumps({"description": "x" * 5000}))
    crawl_user(root, "eve", lambda path: os.symlink("/dev/zero", path), {"b/4": 4})
    ingest(root, tmp_path / "run", workers=1, min_per_category=1, progress=False, max_metadata_bytes=4096)
    found = statuses(tmp_path / "run")
    assert found["ana/b/1/image.png"] == (
        "outside_root", "pin.json is a symlink to /dev/zero, outside the source folder; not read")
    assert found["ana/b/2/image.png"][0] == "bad_metadata"
    assert "over the limit of 4,096" in found["ana/b/2/image.png"][1] and "--max-metadata-bytes" in found["ana/b/2/image.png"][1]
    assert found["eve/b/4/image.png"][0] == "outside_root" and found["ana/b/3/image.png"][0] == "ok"
    with pytest.raises(UnreadableFileError, match="over the limit"):
        read_capped(root / "ana" / "b" / "2" / "pin.json", 100)


def test_a_capped_read_reserves_the_files_size_not_the_cap_and_still_sees_growth(tmp_path):
    import tracemalloc

    small = tmp_path / "pin.json"
    small.write_bytes(b"x" * 1000)
    tracemalloc.start()
    try:
        assert read_capped(small, 1 << 30) == b"x" * 1000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # a read of cap + 1 bytes would reserve a gigabyte
    assert read_capped(small, 1000) == b"x" * 1000
    with pytest.raises(UnreadableFileError, match="1,000 bytes, over the limit of 999"):
        read_capped(small, 999)
    # a file whose size says 0 but holds more (as if it grew after its size was taken) is read whole, or refused
    status = Path("/proc/self/status")
    assert os.stat(status).st_size == 0
    assert b"VmRSS" in read_capped(status, 1 << 20)
    with pytest.raises(UnreadableFileError, match="over the limit of 100 bytes"):
        read_capped(status, 100)


# -- 3. a parser failure is that file's status; no recursion ------------------------------------------------

def test_nested_brackets_and_deep_trees_end_as_statuses(tmp_path):
    for parse, text in ((parse_json, NESTED_JSON), (parse_toml, "a = " + NESTED_JSON)):
        with pytest.raises(UnreadableFileError, match="nested too deeply"):
            parse(text)
    root = tmp_path / "crawl"
    crawl_user(root, "ana", lambda path: path.write_text(NESTED_JSON), {"b/1": 1})
    crawl_user(root, "bob", [{"slug": "b", "category": "art"}], {"b/2": 2, "b/3": 3})
    (root / "bob" / "b" / "3" / "pin.json").write_text('{"a":' * 5000)
    ingest(root, tmp_path / "run", workers=1, min_per_category=1, progress=False)
    found = statuses(tmp_path / "run")
    assert found["ana/b/1/image.png"] == ("bad_metadata", "boards.json is nested too deeply to parse")
    assert found["bob/b/3/image.png"][0] == "bad_metadata" and found["bob/b/2/image.png"][0] == "ok"
    folders = tmp_path / "folders"
    try:
        noise(8, 8, 2).save(deep_tree(folders / "art", 1_100) / "bottom.png")
        make_image(folders / "art" / "top.png", seed=3)
        ingest(folders, tmp_path / "run2", workers=1, min_per_category=1, progress=False)
        assert sorted(status for status, _ in statuses(tmp_path / "run2").values()) == ["ok", "ok"]
    finally:
        remove_tree(folders / "art" / "d")


def test_a_damaged_table_or_config_is_one_error(tmp_path):
    from pintopic.config import load_config

    table = tmp_path / "t.csv"
    table.write_bytes(b'path,category\n"unterminated,\xff\xfe\n')
    with pytest.raises(PintopicError, match="cannot read the table"):
        ingest(table, tmp_path / "run", progress=False)
    config = tmp_path / "c.toml"
    config.write_text("x = " + NESTED_JSON)
    with pytest.raises(PintopicError, match="nested too deeply"):
        load_config(config)
    os.mkfifo(tmp_path / "pipe.toml")
    with pytest.raises(PintopicError, match="named pipe"):
        load_config(tmp_path / "pipe.toml")


# -- 4. category names: wrongly typed ones are bad_metadata (round trips: test_reliability_hostile_run) ---------

def test_wrongly_typed_categories_are_bad_metadata(tmp_path):
    root = tmp_path / "crawl"
    boards = [{"slug": "n", "category": 123}, {"slug": "l", "category": ["a", "b"]}, {"slug": "d", "category": {"x": 1}},
              {"slug": "t", "category": True}, {"slug": "ok", "category": "NA"}]
    crawl_user(root, "ana", boards, {"n/1": 1, "l/2": 2, "d/3": 3, "t/4": 4, "ok/5": 5})
    ingest(root, tmp_path / "run", workers=1, min_per_category=1, progress=False)
    found = statuses(tmp_path / "run")
    for board, shown in (("n", "123"), ("l", '["a", "b"]'), ("d", '{"x": 1}'), ("t", "true")):
        status, detail = next(value for path, value in found.items() if path.startswith(f"ana/{board}/"))
        assert status == "bad_metadata" and "not text" in detail and shown in detail, (board, detail)
    manifest = load_manifest(tmp_path / "run").set_index("path")
    assert manifest.loc["ana/ok/5/image.png", "category"] == "NA"


# -- 5. no user file is ever deleted ------------------------------------------------------------------------

def test_a_folder_that_is_not_a_run_is_refused_and_only_pintopic_temporaries_are_removed(tmp_path):
    from pintopic.report import build_report
    from pintopic.runio import RUN_MARKER, RunLock, atomic_path

    home = tmp_path / "home"
    home.mkdir()
    theirs = home / ".editor.swp.tmp"
    theirs.write_text("another program's work in progress")
    (home / "notes.txt").write_text("mine")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in home.iterdir())
    with pytest.raises(PintopicError, match="is not a pintopic run folder"):
        build_report(home)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in home.iterdir()) == before  # not even a .lock
    run = tmp_path / "run"
    with RunLock(run):
        assert (run / RUN_MARKER).is_file()
    (run / "results").mkdir()
    stale = run / "results" / ".pintopic-table.md.abc123.tmp"
    stale.write_text("left by a killed writer")
    foreign = run / "results" / ".table.md.abc123.tmp"
    foreign.write_text("not ours")
    with RunLock(run):
        pass
    assert not stale.exists() and foreign.exists()
    with atomic_path(run / "x.txt") as tmp:
        assert tmp.name.startswith(".pintopic-x.txt.")


# -- 6. a full disk is one clear line and leaves no partial file ----------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs when this process may mount one (root), else None."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or os.system(f"mount -t tmpfs -o size=2m tmpfs '{mount}' 2>/dev/null") != 0:
        yield None
        return
    try:
        yield mount
    finally:
        os.system(f"umount -l '{mount}'")  # lazy: gone from the tree even while a worker still holds a file


def test_a_pixel_cache_that_does_not_fit_is_refused_with_sizes_and_no_partial_file(tmp_path, small_disk, monkeypatch):
    from pintopic.features.pixel_cache import build_pixel_caches

    base = small_disk or tmp_path
    run = base / "run"
    ingest(tiny_run(tmp_path, per_category=10).parent / "source", run, workers=1, progress=False, decode_cache=False)
    if small_disk is None:  # simulate: a file system with 1 MiB free
        monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result((4096, 4096, 512, 256, 256, 0, 0, 0, 0, 255)))
    with pytest.raises(DiskFullError, match=r"no space left on .*: need 4\.3 MiB, have"):
        build_pixel_caches(run, ["lite0"], workers=1, progress=False)
    assert not list(run.rglob("*.partial.npy")) and not list(run.rglob(".pintopic-*.tmp"))


def test_a_full_disk_while_writing_shards_is_one_clear_error(tmp_path, monkeypatch):
    from pintopic.features import extract

    run = tiny_run(tmp_path, per_category=2)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    with pytest.raises(DiskFullError, match="no space left on .*: need .* have"):
        extract(run, BACKBONE, **FAST)
    assert not list(run.rglob(".pintopic-*.tmp"))


def test_the_free_space_check_runs_before_extraction(tmp_path, small_disk):
    if small_disk is None:
        pytest.skip("needs a small tmpfs (root); the simulated disk-full tests above run everywhere")
    from pintopic.features import extract

    run = tiny_run(tmp_path, per_category=2)
    (small_disk / "filler").write_bytes(b"\0" * (2 * 1024**2 - 16 * 1024))
    os.symlink(small_disk, run / "features")  # the store lands on the nearly full disk
    with pytest.raises(DiskFullError, match="no space left on tmpfs .*: need 30.0 KiB, have 16.0 KiB"):
        extract(run, "lite0", **FAST)


# -- 7. symlink chains: each real folder once ---------------------------------------------------------------

def test_a_symlink_chain_lists_each_real_folder_once(tmp_path):
    from pintopic.dataset.layouts import scan

    root = tmp_path / "folders"
    for level in range(26):
        (root / ".levels" / f"L{level}").mkdir(parents=True)
    for level in range(25):
        for link in ("a", "b"):
            os.symlink(f"../L{level + 1}", root / ".levels" / f"L{level}" / link)
    make_image(root / ".levels" / "L25" / "end.png", seed=1)
    (root / "art").mkdir()
    os.symlink("../.levels/L0", root / "art" / "chain")
    listing = scan(root, "folders")
    assert [entry.path for entry in listing.entries] == ["art/chain/" + "a/" * 25 + "end.png"]
    assert sum("listed once" in item for item in listing.ignored_dirs) == 25


# -- 9. config: validated whole, before any work --------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("dataset.per_category=\"lots\"", "dataset.per_category must be a whole number"),
    ("features.backbones=5", "features.backbones must be a list of names"),
    ("classify.cv=1", "classify.cv must be at least 2"),
    ("classify.test_size=1.5", "classify.test_size must be strictly between 0 and 1"),
    ("features.batch_size=0", "features.batch_size must be at least 1"),
    ("run.folder=\"\"", "run.folder must not be empty"),
    ("features.backbones=[\"nonesuch\"]", "features.backbones: unknown backbone 'nonesuch'"),
    ("classify.classifiers=[\"svmx\"]", "unknown classifier 'svmx'"),
    ("classify.split=\"group:nobody\"", "classify.split must be one of"),
    ("dataset.pixel_cache=[\"nonesuch\"]", "dataset.pixel_cache: unknown backbone"),
    ("dataset.source=\"/nonexistent/photos\"", "dataset.source: /nonexistent/photos does not exist"),
    ("engine.kind=\"spark\"", "engine.kind must be one of 'local', 'ray'"),
    ("engine.actor_threads=0", "engine.actor_threads must be at least 1"),
    ("engine.address=\"head-without-port\"", "engine.address: bad Ray address 'head-without-port'"),
    ("classify.grids.knn.k=[0, 5]", "the knn grid's k values must be at least 1, not 0"),
    ("classify.grids.lsvm.C=[-1]", "the lsvm grid's C values must be more than 0, not -1"),
    ("classify.grids.nn.batch_size=[2.5]", "the nn grid's batch_size values must be whole numbers, not 2.5"),
])
def test_a_bad_config_is_refused_before_any_work_naming_the_key(tmp_path, tiny_study, override, message):
    from pintopic.run import run_study

    with pytest.raises(PintopicError, match=message.replace("(", r"\(").replace("[", r"\[")):
        run_study(tiny_study, overrides=[override], progress=False)
    assert not (tiny_study.parent / "run").exists()


# -- 10. predict finds what ingest finds; nothing found is an error -------------------------------------------

def test_predict_walks_folders_like_ingest_and_refuses_nothing_to_do(tmp_path):
    from pintopic.predict.inputs import find_images
    from pintopic.predict.predictor import check_top_k

    folder = tmp_path / "in"
    for i, suffix in enumerate((".avif", ".ico", ".jfif", ".jpe", ".JPG", ".png")):
        (folder / "sub").mkdir(parents=True, exist_ok=True)
        (folder / "sub" / f"x{i}{suffix}").write_bytes(png_bytes(noise(8, 8, i)))
    (folder / ".hidden.png").write_bytes(png_bytes(noise(8, 8, 9)))
    (folder / ".cache").mkdir()
    (folder / ".cache" / "y.png").write_bytes(png_bytes(noise(8, 8, 10)))
    os.symlink("/dev/zero", folder / "zero.png")
    (folder / "notes.txt").write_text("x")
    found = find_images([folder])
    names = [os.path.basename(image.path) for image in found]
    assert names == ["x0.avif", "x1.ico", "x2.jfif", "x3.jpe", "x4.JPG", "x5.png", "zero.png"]
    assert found[-1].error.startswith("outside_root: symlink to /dev/zero")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PintopicError, match="no images found"):
        find_images([tmp_path / "empty"])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(PintopicError, match="--top-k must be a whole number of at least 1"):
            check_top_k(bad)


# -- 11. a run folder inside its own source ---------------------------------------------------------------------

def test_a_run_folder_inside_its_source_is_not_scanned(tmp_path, capsys):
    source = tiny_run(tmp_path, per_category=5).parent / "source"
    run = source / "zz-run"
    first = ingest(source, run, workers=1, progress=False)
    (run / "dataset" / "stray.png").write_bytes(png_bytes(noise(8, 8, 1)))  # outputs look like images
    other = source / "old-run"
    ingest(tmp_path / "source", other, workers=1, progress=False)  # another run inside the source: skipped too
    capsys.readouterr()
    second = ingest(source, run, workers=1, progress=False)
    assert second["counts"]["found"] == first["counts"]["found"] == 15
    assert not any(path.startswith(("zz-run", "old-run")) for path in load_manifest(run)["path"])
    assert any("a pintopic run folder" in item for item in second["ignored_dirs"])


# -- 13. one line, not a traceback ------------------------------------------------------------------------------

def test_a_damaged_feature_store_is_refused_then_repaired_by_extract(tmp_path):
    from pintopic.features import extract, load_features

    run = tiny_run(tmp_path, per_category=3)
    (folder,) = extract(run, BACKBONE, **FAST)
    _, reference = load_features(folder)
    part = folder / "part-00000.npy"
    damaged = np.load(part)
    damaged[2] = np.nan
    np.save(part, damaged)
    with pytest.raises(PintopicError, match="1 rows with NaN or infinite values"):
        load_features(folder)
    assert extract(run, BACKBONE, **FAST) == [folder]
    assert np.array_equal(load_features(folder)[1], reference)


def test_weights_that_are_not_a_checkpoint_are_one_clear_line(tmp_path):
    from pintopic.features.weights import read_state_dict

    text = tmp_path / "weights.pth"
    text.write_text("hello, these are not weights\n")
    with pytest.raises(PintopicError, match="neither a PyTorch checkpoint .* nor a .safetensors file"):
        read_state_dict(text)
    os.mkfifo(tmp_path / "pipe.pth")
    with pytest.raises(PintopicError, match="named pipe"):
        read_state_dict(tmp_path / "pipe.pth")


# -- 14. truthful reasons -------------------------------------------------------------------------------------

def test_a_damaged_png_is_truncated_and_a_symlink_loop_is_missing_everywhere(tmp_path):
    from hostile import crc_broken_png, zero_size_png

    from pintopic.features.embed import embed_images
    from pintopic.imageio import ImageError, load_rgb

    folder = tmp_path / "folders" / "art"
    folder.mkdir(parents=True)
    (folder / "crc.png").write_bytes(crc_broken_png())
    (folder / "zero.png").write_bytes(zero_size_png())
    os.symlink("loop.png", folder / "loop.png")
    for name, detail in (("crc.png", "a damaged PNG file: broken PNG file"), ("zero.png", "invalid size 0x0")):
        with pytest.raises(ImageError, match=detail) as refused:
            load_rgb(folder / name)
        assert refused.value.status == "truncated"
    ingest(tmp_path / "folders", tmp_path / "run", workers=1, min_per_category=1, progress=False)
    found = statuses(tmp_path / "run")
    assert found["art/crc.png"][0] == found["art/zero.png"][0] == "truncated"
    assert found["art/loop.png"] == ("missing_image", "symlink loop (to loop.png)")
    _, errors = embed_images(BACKBONE, [folder / "loop.png"], pretrained=False)
    assert errors[0][1] == "missing_image" and "symlink loop" in errors[0][2]


# -- 4, 8, 12, 13: the classify stage's files ---------------------------------------------------------------

ODD = ["hats, caps", "NA", "null", "nan", "123", 'say "cheese"', "ünïcödé ✓", "$\\frac$"]


def test_category_names_round_trip_through_results_and_the_report(tmp_path):
    from test_classify_evaluate import FAST_GRIDS, class_features, make_run, make_sample

    from pintopic.classify import evaluate
    from pintopic.report import build_report
    from pintopic.report.build import most_confused_pairs
    from pintopic.report.collect import collect

    sample = make_sample(n_per_category=12, categories=ODD)
    run = make_run(tmp_path, sample, class_features(sample["category"], ODD, separation=0.6))
    results = evaluate(run, classifiers=["knn"], grids=FAST_GRIDS, cv=3, progress=False)
    assert results["categories"] == sorted(ODD)
    contents = collect(run)
    (confusion,) = contents.confusion.values()
    assert list(confusion.index) == list(confusion.columns) == sorted(ODD)
    assert int(confusion.to_numpy().sum()) == results["rows"][0]["n_test"]
    pairs = most_confused_pairs(confusion)
    assert pairs and {name for true, predicted, _, _ in pairs for name in (true, predicted)} <= set(ODD)
    report = build_report(run).read_text()
    assert "hats, caps" in report and "say &quot;cheese&quot;" in report and not contents.problems


def test_an_edited_model_description_is_refused(tmp_path):
    from pintopic.classify import evaluate
    from pintopic.classify.persist import MODEL_JSON, description_checksum
    from pintopic.features import extract
    from pintopic.predict import predict

    run = tiny_run(tmp_path, per_category=6)
    extract(run, BACKBONE, **FAST)
    evaluate(run, classifiers=["knn"], grids={"knn": {"k": [1]}}, cv=2, progress=False)
    model = next((run / "results" / "models").glob("*__knn"))
    image = tmp_path / "source" / "red" / "000.jpg"
    assert predict(model, [image])[0]["top"][0]["category"]
    info = json.loads((model / MODEL_JSON).read_text())
    info["backbone"]["spec"] = "timm:test_efficientnet_gn"  # another network with the same dimension and input
    (model / MODEL_JSON).write_text(json.dumps(info))
    with pytest.raises(PintopicError, match="does not match its checksum"):
        predict(model, [image])
    info["description_sha256"] = description_checksum(info)  # a deliberate attacker forges the checksum too
    (model / MODEL_JSON).write_text(json.dumps(info))
    with pytest.raises(PintopicError, match="gives other weights"):
        predict(model, [image])
    info["backbone"]["spec"], info["categories"] = BACKBONE, ["blue", "green", "purple"]
    info["description_sha256"] = description_checksum(info)
    (model / MODEL_JSON).write_text(json.dumps(info))
    with pytest.raises(PintopicError, match="categories .* are not the model's classes"):
        predict(model, [image])


def test_a_category_too_small_for_the_folds_is_dropped_with_a_warning(tmp_path, capsys):
    from test_classify_evaluate import FAST_GRIDS, class_features, make_run, make_sample

    from pintopic.classify import evaluate

    big = make_sample(n_per_category=30, categories=("a", "b", "c"))
    small = make_sample(n_per_category=5, categories=("small",))  # ingest's default minimum
    sample = pd_concat(big, small)
    run = make_run(tmp_path, sample, class_features(sample["category"], ["a", "b", "c", "small"]))
    results = evaluate(run, classifiers=["knn"], grids=FAST_GRIDS, progress=False)  # 80/20 split, 5 folds
    assert results["categories"] == ["a", "b", "c"]
    assert results["split"]["dropped_categories"] == {"small": "4 training images, too few"}
    assert "category 'small' has 4 training images, too few for 5-fold" in capsys.readouterr().err
    with pytest.raises(PintopicError, match="--cv must be a whole number of at least 2"):
        evaluate(run, cv=1, progress=False)


def pd_concat(*frames):
    import pandas as pd

    return pd.concat(frames).sort_values("image_id").reset_index(drop=True)


def test_model_files_of_the_wrong_kind_are_one_clear_error(tmp_path):
    import io

    from test_reliability_models import _forge

    from pintopic.classify.persist import MODEL_JSON, load_model, save_model
    from pintopic.classify.search import grid_search

    X, y = np.random.default_rng(0).normal(size=(20, 4)), np.array(["a", "b"] * 10)
    model = grid_search("knn", X, y, {"k": [1]}, [(np.arange(10), np.arange(10, 20))])["model"]
    folder = tmp_path / "model"
    save_model(model, folder, {"classifier": "knn"})
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    _forge(folder, buffer.getvalue())  # a plain .npy where model.npz should be, checksums forged
    with pytest.raises(PintopicError, match="not a valid array archive"):
        load_model(folder)
    (folder / MODEL_JSON).write_text('{"format": ' * 3000)
    with pytest.raises(PintopicError, match="nested too deeply"):
        load_model(folder)
    (folder / MODEL_JSON).unlink()
    os.mkfifo(folder / MODEL_JSON)
    with pytest.raises(PintopicError, match="named pipe"):
        load_model(folder)
