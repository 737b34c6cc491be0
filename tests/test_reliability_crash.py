"""Crashes and concurrency: SIGKILL at seeded random points then resume gives the uninterrupted outputs
byte for byte; two runs on one folder at once: the second is refused at once, naming the holder.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from test_features_extract import tiny_run

from pintopic.runio import read_json

BACKBONE = "timm:test_efficientnet"
KILLS = 5

#: Keys whose values record how long (or how much of the work, on which engine) one particular process took, not
#: what it made.
RUN_HISTORY_KEYS = {"seconds", "fit_seconds", "images_per_second", "images_computed", "images_reused", "time", "engine"}
#: Files that describe a run rather than make up its outputs (compared by the run tests, not here).
NOT_COMPARED = {".lock", "run.log", "run.json", "report.html"}

EXTRACT_SETTINGS = dict(pretrained=False, workers=1, progress=False, batch_size=2, shard_rows=4)
EXTRACT_CHILD = f"""
import sys
from pintopic.features.embed import prepared_backbone
from pintopic.features.extraction import extract
prepared_backbone({BACKBONE!r}, pretrained=False)  # imports and model building happen before "ready"
print("ready", flush=True)
extract(sys.argv[1], {BACKBONE!r}, **{EXTRACT_SETTINGS!r})
"""


def without_history(value):
    """A JSON value with every run-history key removed, recursively."""
    if isinstance(value, dict):
        return {key: without_history(item) for key, item in value.items() if key not in RUN_HISTORY_KEYS}
    if isinstance(value, list):
        return [without_history(item) for item in value]
    return value


def assert_same_outputs(folder: Path, reference: Path) -> None:
    """Every output file of ``reference`` is in ``folder`` with the same bytes (JSON: the same apart from timings)."""
    def listing(root: Path) -> list[str]:
        return sorted(str(path.relative_to(root)) for path in root.rglob("*")
                      if path.is_file() and path.name not in NOT_COMPARED)

    names = listing(folder)
    assert names == listing(reference), "different files (a leftover temporary file, or a missing output)"
    for name in names:
        got, want = (folder / name).read_bytes(), (reference / name).read_bytes()
        if name.endswith(".json") and got != want:
            assert without_history(json.loads(got)) == without_history(json.loads(want)), name
        else:
            assert got == want, name


def kill_at(command: list[str], delay: float, wait_for_ready: bool = False, after=lambda: True) -> bool:
    """Start ``command``; once ``after()`` holds (and its "ready" line came), SIGKILL it ``delay`` seconds later.

    Returns True if the process was still running when killed.
    """
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE if wait_for_ready else subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, text=True)
    if wait_for_ready:
        assert process.stdout.readline().strip() == "ready"
    while not after() and process.poll() is None:
        time.sleep(0.002)
    time.sleep(delay)
    running = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    return running


@pytest.mark.timeout(400)
def test_extraction_killed_at_five_random_points_resumes_to_identical_features(tmp_path):
    from pintopic.dataset import load_sample
    from pintopic.features import extract, load_features
    from pintopic.features.embed import prepared_backbone

    run = tiny_run(tmp_path, per_category=30)  # 90 images: 23 shards of 4
    reference_run = tmp_path / "reference"
    shutil.copytree(run / "dataset", reference_run / "dataset")
    command = [sys.executable, "-c", EXTRACT_CHILD]

    prepared_backbone(BACKBONE, pretrained=False)
    (reference,) = extract(reference_run, BACKBONE, **EXTRACT_SETTINGS)  # uninterrupted, in this process
    # one shard's time, from the spacing of the reference's shard files (the whole run also holds the final
    # bookkeeping, which would let a kill land after the last shard)
    written = sorted(path.stat().st_mtime_ns for path in reference.glob("ids-*.parquet"))
    shard_seconds = max((written[-1] - written[0]) / 1e9 / (len(written) - 1), 0.001)

    # The 5 kill points: after a seeded random number of finished shards, plus a seeded fraction of one shard's time.
    rng = np.random.default_rng(9)
    targets = sorted(rng.choice(np.arange(21), KILLS, replace=False))
    interrupted, done = 0, []
    for target, fraction in zip(targets, rng.uniform(0, 1, KILLS)):
        kill_at(command + [str(run)], fraction * shard_seconds, wait_for_ready=True,
                after=lambda target=target: len(list((run / "features").glob("*/ids-*.parquet"))) >= target)
        interrupted += not list((run / "features").glob("*/meta.json"))
        done.append(len(list((run / "features").glob("*/ids-*.parquet"))))
    assert interrupted >= KILLS - 1, f"only {interrupted} of {KILLS} kills landed before the end; the test proves little"
    assert done == sorted(done) and len(set(done)) >= 3, f"finished shards after each kill: {done}"
    # resumed at once: the killed run's orphaned decoding worker must not keep the folder locked
    (folder,) = extract(run, BACKBONE, **EXTRACT_SETTINGS)
    assert folder.name == reference.name
    assert_same_outputs(folder, reference)
    ids, _ = load_features(folder)
    assert len(set(ids)) == len(ids) == 90
    assert list(ids) == sorted(load_sample(run)["image_id"])


@pytest.mark.timeout(600)
def test_pintopic_run_killed_at_five_random_points_resumes_to_identical_outputs(tiny_study: Path):
    from pintopic.run import run_study

    run = tiny_study.parent / "run"
    command = [sys.executable, "-m", "pintopic", "run", str(tiny_study), "--quiet"]
    run_study(tiny_study, progress=False)  # uninterrupted, in this process
    reference = tiny_study.parent / "reference"
    run.rename(reference)  # the same run folder path for both, so recorded paths agree

    # Kill points spread over every stage: just after a seeded random output file of the reference run
    # appears, plus a seeded fraction of the time the reference run took to write its next file.
    written = sorted((path.stat().st_mtime_ns, str(path.relative_to(reference))) for path in reference.rglob("*")
                     if path.is_file() and path.name not in (".lock", "run.log"))
    rng = np.random.default_rng(5)
    milestones = sorted(rng.choice(len(written) - 1, KILLS, replace=False))
    interrupted = 0
    for index, fraction in zip(milestones, rng.uniform(0, 1, KILLS)):
        gap = min(2.0, (written[index + 1][0] - written[index][0]) / 1e9)
        interrupted += kill_at(command, fraction * gap, after=lambda index=index: (run / written[index][1]).exists())
    assert interrupted >= KILLS - 1, f"only {interrupted} of {KILLS} kills landed before the end; the test proves little"
    run_study(tiny_study, progress=False)
    assert_same_outputs(run, reference)
    results = read_json(run / "results" / "results.json")
    assert len(results["rows"]) == 3 and all(row["n_train"] + row["n_test"] == 36 for row in results["rows"])


@pytest.mark.timeout(300)
def test_two_runs_at_once_the_second_is_refused_naming_the_holder(tiny_study: Path):
    from pintopic.runio import RunLock

    run = tiny_study.parent / "run"
    command = [sys.executable, "-m", "pintopic", "run", str(tiny_study), "--quiet"]
    first, second = (subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                     for _ in range(2))
    started = time.monotonic()
    try:
        while first.poll() is None and second.poll() is None:
            assert time.monotonic() - started < 60, "neither run was refused"
            time.sleep(0.02)
        loser, winner = (first, second) if first.poll() is not None else (second, first)
        refused_after = time.monotonic() - started
        error = loser.stderr.read()
        assert loser.returncode == 2, error
        assert f"is in use by pid {winner.pid} " in error and "Traceback" not in error, error
        assert len(error.strip().splitlines()) == 1, error
        assert refused_after < 20 and winner.poll() is None, "the second run waited instead of leaving at once"

        # SIGKILL the holder mid-extraction: the kernel releases the lock, even with its workers still exiting
        deadline = time.monotonic() + 120
        while not list((run / "features").glob("*")) and winner.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait()
    with RunLock(run):
        pass
