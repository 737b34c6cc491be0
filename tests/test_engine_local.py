"""The local engine's worker processes end with the process that started them, even when it is killed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SLOW_RUN = """
import time
import numpy as np
from pintopic.engine import EngineSettings, Step, open_engine

def slow(batch):
    time.sleep(120)
    return batch

print("started", flush=True)
list(open_engine(EngineSettings(kind="local")).run([{"value": np.arange(2)}] * 4, Step(slow), workers=2))
"""


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.timeout(120)
def test_workers_end_when_their_parent_is_killed():
    process = subprocess.Popen([sys.executable, "-c", SLOW_RUN], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    workers: list[int] = []
    try:
        assert process.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 60
        while len(workers := _children(process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(workers) >= 2, "the local engine did not start its two workers"
        time.sleep(1.0)  # the workers are inside the slow step now
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in workers if _alive(pid)], "workers outlived their killed parent"
    finally:
        process.kill()
        for pid in workers + _children(process.pid):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
