"""`pintopic run` runs each stage in a process of its own (issue 22, memory): the run's own process stays small,
the results are those of one process, errors cross over intact, and a killed run takes its stage with it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, child_pids, is_alive

from pintopic.errors import PintopicError
from pintopic.isolation import call_in_child
from pintopic.runio import RunLock
from pintopic.safeio import UnreadableFileError, read_regular


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.timeout(600)
def test_stages_in_their_own_processes_leave_the_run_small_and_give_the_same_results(tiny_study: Path):
    run = tiny_study.parent / "run"
    probe = subprocess.run([sys.executable, "-c", (
        "import sys, contextlib, io, json\n"
        "from pintopic.run import run_study\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    run_study({str(tiny_study)!r}, progress=False)\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'onnxruntime', 'sklearn', 'pyarrow') if m in sys.modules)\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec from the forked copy of pytest
        "peak = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
        "print(json.dumps({'heavy': heavy, 'peak_mb': int(peak.split()[1]) / 1024}))\n")],
        cwd=REPO, capture_output=True, text=True, timeout=500)
    assert probe.returncode == 0, probe.stderr
    parent = json.loads(probe.stdout.strip().splitlines()[-1])
    assert parent["heavy"] == [], "a stage ran in the run's own process"
    assert parent["peak_mb"] < 150, parent
    isolated = json.loads((run / "results" / "results.json").read_text())

    one_process = tiny_study.parent / "one-process"
    done = subprocess.run([sys.executable, "-m", "pintopic", "run", str(tiny_study), "--quiet",
                           "--set", f"run.folder={json.dumps(str(one_process))}", "--set", "run.stage_processes=false"],
                          cwd=REPO, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr
    together = json.loads((one_process / "results" / "results.json").read_text())
    keys = ("backbone", "classifier", "best_params", "test_f1_macro", "n_train", "n_test")
    assert [{k: row[k] for k in keys} for row in isolated["rows"]] == [{k: row[k] for k in keys} for row in together["rows"]]
    (store,) = (run / "features").glob("*/meta.json")
    (other,) = (one_process / "features").glob("*/meta.json")
    names = sorted(p.name for p in store.parent.iterdir() if p.name.startswith(("ids-", "part-")))
    assert names and names == sorted(p.name for p in other.parent.iterdir() if p.name.startswith(("ids-", "part-")))
    for name in names:  # the same features, byte for byte
        assert (store.parent / name).read_bytes() == (other.parent / name).read_bytes(), name


@pytest.mark.timeout(300)
def test_a_killed_run_takes_its_stage_process_with_it_and_frees_the_folder(tiny_study: Path):
    run = tiny_study.parent / "run"
    process = subprocess.Popen([sys.executable, "-m", "pintopic", "run", str(tiny_study), "--quiet"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, stage = time.monotonic() + 120, None
    try:
        while stage is None:  # the extract stage's process, named last on its command line
            assert process.poll() is None and time.monotonic() < deadline, "no extract process was seen"
            stage = next((pid for pid in child_pids(process.pid) if _command(pid).endswith(" extract ")), None)
            time.sleep(0.01)
        time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
        process.wait()
        gone_by = time.monotonic() + 2  # at once: a stage left to itself imports torch for longer than that
        while is_alive(stage):
            assert time.monotonic() < gone_by, "the stage process outlived its killed run"
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    assert not list((run / "features").glob("*/meta.json")), "the stage went on after its run was killed"
    with RunLock(run):  # free at once: nothing of the killed run holds it
        pass


def test_a_stage_error_crosses_over_with_its_kind_and_a_value_comes_back(tmp_path: Path):
    run = tmp_path / "run"
    (tmp_path / "hello.txt").write_bytes(b"hello")
    with RunLock(run):
        assert call_in_child(run, read_regular, tmp_path / "hello.txt") == b"hello"
        with pytest.raises(UnreadableFileError) as caught:
            call_in_child(run, read_regular, tmp_path / "missing.txt")
        assert caught.value.kind == "missing" and caught.value.path == str(tmp_path / "missing.txt")
        with pytest.raises(PintopicError, match=r"abort stage's process ended without an answer \(killed by SIGABRT\)"):
            call_in_child(run, os.abort)
