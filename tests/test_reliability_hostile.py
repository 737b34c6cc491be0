"""The hostile crawl (tests/hostile.py) through every stage of the CLI: ingest, extract, evaluate, predict, report.

Every file ends with its status and reason (pipes, /dev/zero, nested brackets and wrongly typed categories as
metadata included), every valid image is kept with its board's category, no stage crashes (exit 0, no
traceback), hangs (each command has a timeout), touches anything outside the run folder, or peaks above 1 GB
of resident memory. The folders corpus goes through ``pintopic run`` in ``test_reliability_hostile_run.py``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hostile import HOSTILE_BOARD, build_hostile_crawl, tree_snapshot

from pintopic.dataset import image_file, load_manifest, load_sample
from pintopic.runio import read_json

REPO = Path(__file__).resolve().parent.parent
PEAK_RSS_LIMIT = 1024**3
#: ``pintopic run`` holds every stage's libraries in one process (PyTorch, timm, scikit-learn, matplotlib): ~1.0 GB.
RUN_PEAK_RSS_LIMIT = 1280 * 1024**2
BACKBONE = "timm:test_efficientnet"


#: Runs ``python -m pintopic ARGS`` and writes its peak RSS (KiB) to argv[1]: the process's own high-water
#: mark (VmHWM, fresh since exec) or that of a worker it waited for, whichever is larger, taken when the
#: command is done, after every other exit handler. Not ``ru_maxrss`` of the child seen from pytest:
#: Linux carries the parent's high-water mark into it, so it would report pytest's peak. The interpreter's
#: teardown after that point is left out: PyTorch's CUDA build touches ~120 MB more while unloading.
WRAPPER = """
import atexit, resource, runpy, sys
peak_file = sys.argv[1]


def record_peak():
    hwm = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
    open(peak_file, "w").write(str(max(hwm, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)))


atexit.register(record_peak)  # registered first, so it runs last
sys.argv = ["pintopic", *sys.argv[2:]]
runpy.run_module("pintopic", run_name="__main__", alter_sys=True)
"""


def pintopic_cli(*args: str | bytes, timeout: float = 300) -> tuple[int, str, str, int]:
    """Run ``python -m pintopic ARGS``; returns (exit code, stdout, stderr, peak RSS in bytes)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        peak_file = Path(folder) / "peak"
        result = subprocess.run([sys.executable, "-c", WRAPPER, str(peak_file), *args],
                                cwd=REPO, capture_output=True, timeout=timeout)
        return (result.returncode, result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace"),
                int(peak_file.read_text()) * 1024)


def assert_clean(step: str, result: tuple[int, str, str, int], peaks: dict[str, int],
                 limit: int = PEAK_RSS_LIMIT) -> None:
    """Exit 0, no stack trace, no "unexpected" (the CLI's last-resort line for a bug), peak RSS under ``limit``."""
    code, out, err, peak = result
    assert code == 0, f"{step} exited {code}:\n{out}\n{err}"
    assert "Traceback" not in err and "unexpected" not in err, f"{step} printed a stack trace:\n{err}"
    peaks[step] = peak
    assert peak < limit, f"{step} peaked at {peak / 2**20:.0f} MiB"


def assert_one_line_error(step: str, result: tuple[int, str, str, int], message: str) -> None:
    """Exit 2 with exactly one stderr line ``pintopic: error: ...`` containing ``message``."""
    code, out, err, _ = result
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("pintopic: error: "), f"{step}: {code}\n{out}\n{err}"
    assert message in lines[0], f"{step}: {lines[0]}"


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """The hostile crawl taken through ingest, extract and evaluate by the CLI, with each stage's peak RSS."""
    base = tmp_path_factory.mktemp("hostile")
    source, expected = build_hostile_crawl(base)
    run = base / "run"
    peaks: dict[str, int] = {}
    before = tree_snapshot(base)
    assert_clean("ingest", pintopic_cli("ingest", str(source), str(run), "--quiet", "--workers", "2"), peaks)
    assert_clean("extract", pintopic_cli("extract", str(run), "--backbone", BACKBONE, "--no-pretrained", "--quiet",
                                         "--batch-size", "4", "--workers", "1"), peaks)
    assert_clean("evaluate", pintopic_cli("evaluate", str(run), "--cv", "3", "--quiet"), peaks)
    assert tree_snapshot(base, skip=(run,)) == before, "a stage changed something outside its run folder"
    return source, run, expected, peaks


@pytest.mark.timeout(600)
def test_ingest_gives_every_file_its_status_reason_and_label(hostile_run):
    _, run, expected, peaks = hostile_run
    manifest = load_manifest(run).set_index("path")
    assert manifest["status"].to_dict() == {path: status for path, (status, _) in expected.items()}
    bad = manifest[manifest["status"] != "ok"]
    assert (bad["reason_detail"].str.len() > 0).all(), bad[bad["reason_detail"].str.len() == 0]
    ok = manifest[manifest["status"] == "ok"]
    assert ok["category"].to_dict() == {path: category for path, (status, category) in expected.items() if status == "ok"}
    assert ok["width"].notna().all() and ok["sha256"].notna().all()
    rows = manifest.reset_index().set_index("pin")
    assert (rows.loc["104", "width"], rows.loc["104", "height"]) == (20, 40)  # EXIF rotation applied
    assert (rows.loc["107", "width"], rows.loc["107", "height"]) == (20000, 50)
    assert (rows.loc["115", "width"], rows.loc["115", "height"]) == (60000, 60000)  # read from the header only
    record = read_json(run / "dataset" / "dataset.json")
    assert record["counts"]["ignored_dirs"] == 1 and "photo.jpg" in record["ignored_dirs"][0]
    assert sum(record["counts"]["by_status"].values()) == len(expected)
    # the non-UTF-8 name is kept, displayable, and opens through its exact bytes
    latin = manifest.loc[f"ana/{HOSTILE_BOARD}/109/caf\\xe9-latin1.png"]
    assert bytes(latin["abspath"]).endswith(b"/caf\xe9-latin1.png") and os.path.exists(image_file(latin))
    sample = load_sample(run)
    assert set(sample["path"]) == set(ok.index)  # every valid image is sampled (no per-category cap)
    print("peak RSS MiB:", {step: round(peak / 2**20) for step, peak in peaks.items()})


@pytest.mark.timeout(600)
def test_extract_and_evaluate_use_every_valid_image(hostile_run):
    _, run, expected, _ = hostile_run
    import numpy as np

    from pintopic.features import load_features

    (meta_path,) = (run / "features").glob("*/meta.json")
    meta = read_json(meta_path)
    sample = load_sample(run)
    assert meta["failed"] == [] and meta["n_rows"] == len(sample)
    ids, X = load_features(meta_path.parent)
    assert list(ids) == sorted(sample["image_id"]) and np.isfinite(X).all()
    results = read_json(run / "results" / "results.json")
    assert {row["classifier"] for row in results["rows"]} == {"knn", "lsvm", "nn"}
    n_ok = sum(1 for status, _ in expected.values() if status == "ok")
    for row in results["rows"]:
        assert row["n_train"] + row["n_test"] == n_ok and row["n_dropped"] == 0
    assert results["categories"] == ["art", "food_drink", "travel"]


#: What predict says for the files whose ingest status is not about the file's bytes: a symlink to /dev/zero is
#: refused as a device (ingest never opened it: outside_root); the others open fine (predict opens what it is given).
PREDICT_STATUS = {f"ana/{HOSTILE_BOARD}/208/image.jpg": "not_an_image"}


@pytest.mark.timeout(600)
def test_predict_answers_every_file_and_errors_per_file(hostile_run):
    source, run, expected, peaks = hostile_run
    model = next((run / "results" / "models").glob("*__knn"))
    manifest = load_manifest(run).set_index("path")
    asked = [path for path in expected if not path.endswith("/unsorted/1/image.png")
             and not os.path.isdir(bytes(manifest.loc[path, "abspath"]))]
    files = [bytes(manifest.loc[path, "abspath"]) for path in asked]
    before = tree_snapshot(run.parent)
    result = pintopic_cli("predict", str(model), *files, "--format", "json", "--top-k", "2")
    assert_clean("predict", result, peaks)
    assert tree_snapshot(run.parent) == before, "predict changed a file"
    print("peak RSS MiB:", {step: round(value / 2**20) for step, value in peaks.items()})
    answers = json.loads(result[1])
    assert len(answers) == len(files)  # one answer per input, in input order
    for path, answer in zip(asked, answers):
        status = PREDICT_STATUS.get(path, expected[path][0])
        if status in ("ok", "bad_metadata", "outside_root", "no_category"):  # decodable images
            assert not answer.get("error"), (path, answer)
            assert {"art", "food_drink", "travel"} & set(json.dumps(answer).replace('"', " ").split()), (path, answer)
        else:
            assert answer.get("error"), (path, answer)
            assert answer["error"].startswith(status), (path, answer)


@pytest.mark.timeout(300)
def test_report_of_the_hostile_run_is_complete(hostile_run):
    _, run, _, peaks = hostile_run
    assert_clean("report", pintopic_cli("report", str(run)), peaks)
    html = (run / "report.html").read_text()
    assert "This report is partial" not in html and "bad_metadata" in html
