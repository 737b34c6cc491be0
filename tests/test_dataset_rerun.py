"""Reruns: a no-op when nothing changed, no decoding when only sampling or exclusions change, determinism."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import make_image

import pintopic.dataset.verify as verify
from pintopic.dataset import ingest, load_manifest, load_sample
from pintopic.runio import read_json

OUTPUTS = ("manifest.parquet", "sample.parquet", "distribution.csv", "distribution.png", "dataset.json")


def snapshot(run: Path) -> dict[str, tuple[int, bytes]]:
    folder = run / "dataset"
    return {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in sorted(folder.iterdir())}


@pytest.fixture
def count_decodes(monkeypatch):
    """Count (and optionally forbid) decodes; in-process (workers=1) runs call verify.verify_file."""
    calls: list[bytes] = []
    real = verify.verify_file

    def counting(path, max_pixels=None, *rest):
        calls.append(path)
        return real(path, max_pixels, *rest)

    monkeypatch.setattr(verify, "verify_file", counting)
    return calls


def test_same_settings_is_a_noop(tiny_folders: Path, tmp_path: Path, count_decodes, capsys):
    run = tmp_path / "run"
    first = ingest(tiny_folders, run, per_category=5, workers=1, progress=False)
    assert len(count_decodes) == 36
    before = snapshot(run)
    count_decodes.clear()
    second = ingest(tiny_folders, run, per_category=5, workers=1, progress=False)
    assert count_decodes == []
    assert snapshot(run) == before
    assert second == first
    assert "up to date" in capsys.readouterr().out


def test_sampling_change_keeps_the_scan(tiny_folders: Path, tmp_path: Path, count_decodes):
    run = tmp_path / "run"
    ingest(tiny_folders, run, per_category=5, workers=1, progress=False)
    before = snapshot(run)
    small = set(load_sample(run)["image_id"])
    count_decodes.clear()
    ingest(tiny_folders, run, per_category=8, seed=0, min_per_category=3, workers=1, progress=False)
    assert count_decodes == []
    after = snapshot(run)
    assert after["manifest.parquet"] == before["manifest.parquet"]  # not rewritten: same bytes, same mtime
    assert after["sample.parquet"] != before["sample.parquet"]
    large = set(load_sample(run)["image_id"])
    assert len(small) == 15 and len(large) == 24 and small <= large  # raising per_category keeps the first draw


def test_exclude_change_relabels_without_decoding(tiny_folders: Path, tmp_path: Path, count_decodes):
    run = tmp_path / "run"
    ingest(tiny_folders, run, workers=1, progress=False)
    count_decodes.clear()
    record = ingest(tiny_folders, run, exclude=["none", "other", "red"], workers=1, progress=False)
    assert count_decodes == []
    manifest = load_manifest(run)
    assert set(manifest.loc[manifest["category"] == "red", "status"]) == {"excluded_category"}
    assert record["counts"]["by_status"]["excluded_category"] == 12
    assert "red" not in record["counts"]["by_category"]
    count_decodes.clear()
    ingest(tiny_folders, run, workers=1, progress=False)
    assert count_decodes == []
    assert set(load_manifest(run)["status"]) == {"ok"}


def test_changed_source_decodes_only_what_changed(tiny_folders: Path, tmp_path: Path, count_decodes):
    run = tmp_path / "run"
    ingest(tiny_folders, run, workers=1, progress=False)
    count_decodes.clear()
    make_image(tiny_folders / "red" / "img_00.png", seed=999)  # rewritten: new content, new mtime
    os.utime(tiny_folders / "red" / "img_00.png", ns=(1, 1))
    make_image(tiny_folders / "blue" / "new.png", seed=998)
    (tiny_folders / "green" / "img_03.png").unlink()
    ingest(tiny_folders, run, workers=1, progress=False)
    assert sorted(os.path.basename(path) for path in count_decodes) == [b"img_00.png", b"new.png"]
    assert len(load_manifest(run)) == 36


def test_max_pixels_change_reuses_small_images(tiny_folders: Path, tmp_path: Path, count_decodes):
    run = tmp_path / "run"
    ingest(tiny_folders, run, workers=1, progress=False)
    count_decodes.clear()
    ingest(tiny_folders, run, max_pixels=48 * 40, workers=1, progress=False)  # every image is exactly 48x40
    assert count_decodes == []
    count_decodes.clear()
    ingest(tiny_folders, run, max_pixels=100, workers=1, progress=False)  # now they are too large: checked again
    assert len(count_decodes) == 36
    assert set(load_manifest(run)["status"]) == {"too_large"}


def test_byte_identical_outputs_in_a_new_folder(tiny_folders: Path, tmp_path: Path):
    ingest(tiny_folders, tmp_path / "a", per_category=4, seed=3, workers=1, progress=False)
    ingest(tiny_folders, tmp_path / "b", per_category=4, seed=3, workers=2, progress=False)
    for name in OUTPUTS:
        assert (tmp_path / "a" / "dataset" / name).read_bytes() == (tmp_path / "b" / "dataset" / name).read_bytes(), name


def test_damaged_output_is_rebuilt(tiny_folders: Path, tmp_path: Path, count_decodes):
    run = tmp_path / "run"
    ingest(tiny_folders, run, workers=1, progress=False)
    good = (run / "dataset" / "sample.parquet").read_bytes()
    (run / "dataset" / "sample.parquet").write_bytes(b"garbage")
    count_decodes.clear()
    ingest(tiny_folders, run, workers=1, progress=False)
    assert count_decodes == []
    assert (run / "dataset" / "sample.parquet").read_bytes() == good
    (run / "dataset" / "manifest.parquet").write_bytes(b"garbage")  # the decode cache itself: decode again
    ingest(tiny_folders, run, workers=1, progress=False)
    assert len(count_decodes) == 36


def test_lock_refuses_a_second_process(tiny_folders: Path, tmp_path: Path):
    import subprocess
    import sys

    from pintopic.errors import RunLockedError
    from pintopic.runio import RunLock

    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pintopic.runio import RunLock\n"
        f"with RunLock({str(run)!r}):\n    print('held', flush=True); time.sleep(30)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError):
            ingest(tiny_folders, run, workers=1, progress=False)
    finally:
        holder.kill()
        holder.wait()
    with RunLock(run):  # held by this process (as `pintopic run` does): ingest proceeds
        ingest(tiny_folders, run, workers=1, progress=False)
    assert read_json(run / "dataset" / "dataset.json")["counts"]["ok"] == 36
