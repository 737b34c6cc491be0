"""Shared fixtures: real-data locations (fail under CI when missing, skip elsewhere) and tiny images."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
OPENCLIPART = Path("/usr/share/openclipart/png")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        message = f"{what} not found at {path}"
        if IN_CI:
            pytest.fail(message + " (required under CI=true)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def natural_images() -> Path:
    """../shared/data/natural-images: 6,899 real photos in 8 class folders."""
    return _require(SHARED_DATA / "natural-images", "shared natural-images data")


@pytest.fixture(scope="session")
def openclipart() -> Path:
    """Debian's openclipart-png collection (apt-get install openclipart-png)."""
    return _require(OPENCLIPART, "Debian's openclipart-png")


def make_image(path: Path, color=(200, 30, 30), size=(48, 40), fmt: str | None = None, seed: int | None = None) -> Path:
    """Write a small image; with ``seed``, add noise so different seeds give different contents."""
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.empty((size[1], size[0], 3), dtype=np.uint8)
    array[:] = color
    if seed is not None:
        rng = np.random.default_rng(seed)
        array = np.clip(array.astype(int) + rng.integers(-40, 40, array.shape), 0, 255).astype(np.uint8)
    Image.fromarray(array).save(path, format=fmt)
    return path


#: The colours of the tiny folders dataset's three categories.
TINY_COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def write_tiny_folders(root: Path, per_category: int = 12) -> Path:
    """3 categories x ``per_category`` distinct noisy images of clearly different colours under ``root``."""
    for c_index, (name, color) in enumerate(TINY_COLORS.items()):
        for i in range(per_category):
            make_image(root / name / f"img_{i:02d}.png", color=color, seed=c_index * 100 + i)
    return root


@pytest.fixture
def tiny_folders(tmp_path: Path) -> Path:
    """A folders dataset: 3 categories x 12 distinct noisy images of clearly different colours."""
    return write_tiny_folders(tmp_path / "folders")


#: Four categories of clearly different colours, for noisy crawls.
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "grey": (128, 128, 128)}


@pytest.fixture(scope="session")
def colour_folders(tmp_path_factory) -> Path:
    """A folders dataset: 4 categories x 45 tiny (8 x 8) distinct images, enough for a few boards of 10-16 pins."""
    root = tmp_path_factory.mktemp("colour-folders")
    for c_index, (name, color) in enumerate(COLOURS.items()):
        for i in range(45):
            make_image(root / name / f"img_{i:02d}.png", color=color, size=(8, 8), seed=c_index * 1000 + i)
    return root


@pytest.fixture(scope="session")
def openclipart_run(openclipart: Path, tmp_path_factory) -> Path:
    """A run folder holding ``pintopic ingest`` of openclipart-png (every ok image, categories with 40+ ok).

    Ingested once per test session (about 10-30 s on 2 cores); tests must treat it as read-only.
    """
    from pintopic.dataset import ingest

    run = tmp_path_factory.mktemp("openclipart-run")
    ingest(openclipart, run, per_category=None, min_per_category=40, seed=0, progress=False)
    return run


#: A whole tiny study: the 3-colour folders dataset, a tiny untrained timm model, small grids.
TINY_STUDY = """
name = "tiny"
[run]
folder = "run"
[dataset]
source = "{source}"
layout = "folders"
[features]
backbones = ["timm:test_efficientnet"]
pretrained = false
batch_size = 2
[classify]
classifiers = ["knn", "lsvm", "nn"]
cv = 3
[classify.grids.knn]
k = [1, 3]
[classify.grids.lsvm]
C = [1.0]
[classify.grids.nn]
batch_size = [32]
"""


@pytest.fixture
def tiny_study(tmp_path: Path, tiny_folders: Path) -> Path:
    """A config file for TINY_STUDY; its run folder is ``tmp_path / "run"``."""
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_STUDY.format(source=tiny_folders))
    return config


@pytest.fixture(scope="session")
def ray_cluster():
    """A Ray cluster of two nodes (one CPU, a 150 MB object store each) on 127.0.0.1 only; its address.

    Started once per test session (about 15 s) and shut down at the end. Ray is an optional extra: without
    it the tests that need it skip, except under CI=true, where requirements.txt installs it.
    """
    previous = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    # Ray's switch for a loopback-only node: every Ray process of this session (and of drivers started from
    # it) then binds and connects on 127.0.0.1, never the machine's network address
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if IN_CI:
        import ray
    else:
        ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'pintopic[ray]')")
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": 150 * 1024**2, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cluster.add_node(**node)
    cluster.wait_for_nodes()
    try:
        yield cluster.address
    finally:
        ray.shutdown()
        cluster.shutdown()
        if previous is None:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = previous


@pytest.fixture(scope="session")
def serve_models_dir(tmp_path_factory) -> Path:
    """``RUN/results/models`` of a tiny fitted run (knn, logreg, ensemble on the untrained test_efficientnet), built
    once per session for the service tests; read-only."""
    from servekit import fitted_run

    base = tmp_path_factory.mktemp("serve-run")
    return fitted_run(write_tiny_folders(base / "folders"), base / "run", backbone="timm:test_efficientnet",
                      pretrained=False)


@pytest.fixture
def read_audit(monkeypatch):
    """A list that records every path opened from Python (audit hook) or read as parquet (pyarrow reads in C++,
    out of the hook's sight) while the test runs: to prove that a stage never reads a file."""
    import pandas as pd
    import pyarrow.parquet as pq

    opened: list[str] = []
    active = [True]

    def hook(event, args):
        if active[0] and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            opened.append(os.fsdecode(args[0]))

    sys.addaudithook(hook)  # hooks cannot be removed: ``active`` switches it off after the test
    def recording(original):
        def recorder(source, *args, **kwargs):
            opened.append(str(source))
            return original(source, *args, **kwargs)

        return recorder

    for module, name in ((pq, "read_table"), (pd, "read_parquet")):
        monkeypatch.setattr(module, name, recording(getattr(module, name)))
    yield opened
    active[0] = False


def child_pids(pid: int) -> list[int]:
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


def is_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (from /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
