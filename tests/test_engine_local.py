"""The local engine: outputs in order or as they finish, and worker processes that end with the process that
started them, even when it is killed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import child_pids, is_alive

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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.timeout(120)
def test_workers_end_when_their_parent_is_killed():
    process = subprocess.Popen([sys.executable, "-c", SLOW_RUN], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    workers: list[int] = []
    try:
        assert process.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 60
        while len(workers := child_pids(process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(workers) >= 2, "the local engine did not start its two workers"
        time.sleep(1.0)  # the workers are inside the slow step now
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(is_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in workers if is_alive(pid)], "workers outlived their killed parent"
    finally:
        process.kill()
        for pid in workers + child_pids(process.pid):
            if is_alive(pid):
                os.kill(pid, signal.SIGKILL)


def _first_batch_slow(batch):
    if batch["value"][0] == 0:
        time.sleep(1.5)
    return {"value": batch["value"] * 10}


@pytest.mark.timeout(60)
def test_unordered_outputs_come_as_they_finish_and_none_is_lost():
    from pintopic.engine import Step
    from pintopic.engine.local import LocalEngine

    batches = [{"value": np.arange(2 * i, 2 * i + 2)} for i in range(6)]
    ordered = list(LocalEngine().run(batches, Step(_first_batch_slow), workers=2))
    unordered = list(LocalEngine().run(batches, Step(_first_batch_slow), workers=2, ordered=False))
    assert [index for index, _ in ordered] == list(range(6))
    assert unordered[0][0] != 0 and unordered[-1][0] == 0  # the slow batch no longer holds the others back
    assert sorted(index for index, _ in unordered) == list(range(6))
    for index, output in unordered:
        assert output["value"].tolist() == (batches[index]["value"] * 10).tolist()
