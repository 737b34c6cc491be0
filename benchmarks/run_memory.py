"""Peak memory of a whole ``pintopic run`` against the sample size (issue 22 part 3); prints one JSON object.

    python benchmarks/run_memory.py --runs demo:1000,demo:3000,demo:6000,beyond:6000

Builds folders datasets of exactly N files (hard links, dealt round-robin over the categories of Debian's
openclipart-png and ../shared/data/natural-images that hold at least 250 files: 15 categories), then runs each config
(``configs/<name>.toml``) on its dataset in a child process with every image sampled
(``dataset.per_category=0``). While the run goes, the proportional set size (PSS, shared pages counted once)
of its whole process tree and the resident set (RSS) of its main process are sampled every second; when it
ends, ``os.wait4`` gives the kernel's peak RSS of the largest process of the tree (what ``/usr/bin/time -v``
reports). The samples are attributed to stages with ``run.json``'s stage timings, so the JSON says which stage
holds the peak. ``--pixel-cache-pays`` also times the pixel cache + extract against extract decoding.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SOURCES = (Path("/usr/share/openclipart/png"), REPO.parent / "shared" / "data" / "natural-images")
EXCLUDED = ("none", "other")
#: Categories with fewer files are left out, so that each kept one holds 60+ images at 1,000 (15 categories).
MIN_FILES = 250


def _categories() -> dict[str, list[Path]]:
    """Category -> its files (sorted), over both collections; categories with fewer than MIN_FILES are left out."""
    found: dict[str, list[Path]] = {}
    for root in SOURCES:
        if not root.is_dir():
            raise SystemExit(f"{root} is missing (apt-get install openclipart-png; ../shared/data)")
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in EXCLUDED):
            files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())  # links: duplicates
            if len(files) >= MIN_FILES:
                found[f"{root.name}-{folder.name}"] = files
    return found


def build_source(work: Path, size: int) -> Path:
    """``work/src-N``: exactly N files, dealt round-robin over the categories (hard links, a copy across filesystems)."""
    folder = work / f"src-{size}"
    if folder.exists():
        return folder
    categories = _categories()
    if size > sum(len(files) for files in categories.values()):
        raise SystemExit(f"only {sum(len(f) for f in categories.values())} files available, asked for {size}")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    taken, depth = 0, 0
    while taken < size:
        for category, files in categories.items():
            if depth < len(files) and taken < size:
                target = tmp / category / f"{depth:05d}{files[depth].suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(files[depth], target)
                except OSError:
                    shutil.copy2(files[depth], target)
                taken += 1
        depth += 1
    tmp.rename(folder)
    return folder


def _stage_windows(run: Path) -> list[tuple[str, float, float]]:
    """(stage, start, end) in seconds since the run started, from run.json's stage timings (in stage order)."""
    try:
        seconds = json.loads((run / "run.json").read_text())["seconds"]
    except (OSError, ValueError, KeyError):
        return []
    windows, start = [], 0.0
    for stage in ("ingest", "finetune", "extract", "evaluate"):
        if stage in seconds:
            windows.append((stage, start, start + seconds[stage]))
            start += seconds[stage]
    windows.append(("report", start, float("inf")))
    return windows


def _rss_bytes(pid: int, field: str = "VmRSS:") -> int:
    """A process's resident bytes (``RssFile:``: the part that is mapped files, e.g. a memory-mapped cache)."""
    from memory import proc_kb_field

    return proc_kb_field(f"/proc/{pid}/status", field)


def _note_peaks(peaks: dict, tree: list[int], main: int, now: float) -> None:
    """Keep each process's kernel peak RSS (VmHWM), what it is, and when that peak was first seen: which
    process of the tree holds the run's peak (the main one, a decoding worker, a CV worker...)."""
    from memory import proc_kb_field

    for pid in tree:
        peak = proc_kb_field(f"/proc/{pid}/status", "VmHWM:") / 2**20
        if peak and peak > peaks.get(pid, {}).get("peak_rss_mb", 0.0):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            peaks[pid] = {"pid": pid, "main": pid == main, "command": command.strip()[:120],
                          "peak_rss_mb": round(peak, 1), "seen_at_s": round(now, 1)}


def measure_run(config: str, size: int, work: Path, source: Path, extra: list[str], startup_seconds: float) -> dict:
    """One whole ``pintopic run`` in a child process, its memory sampled; the run folder is made fresh."""
    from memory import _pss_bytes, _tree

    run = work / f"run-{config}-{size}"
    shutil.rmtree(run, ignore_errors=True)
    command = [sys.executable, "-m", "pintopic", "run", str(REPO / "configs" / f"{config}.toml"), "-q",
               "--set", f"dataset.source={source}", "--set", f"run.folder={run}", "--set", "dataset.per_category=0",
               *[item for setting in extra for item in ("--set", setting)]]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    samples, peaks = [], {}
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        now, tree = time.perf_counter() - started, _tree(child.pid)
        samples.append((now, sum(_pss_bytes(p) for p in tree), _rss_bytes(child.pid), _rss_bytes(child.pid, "RssFile:")))
        _note_peaks(peaks, tree, child.pid, now)
        time.sleep(1.0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    result = {"config": config, "images_in_source": size, "seconds": round(seconds, 1), "exit_code": code,
              "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
              "peak_tree_pss_mb": round(max((s[1] for s in samples), default=0) / 2**20, 1),
              "peak_main_rss_mb": round(max((s[2] for s in samples), default=0) / 2**20, 1)}
    if code:
        result["stderr_tail"] = child.stderr.read().decode(errors="replace")[-3000:]
        return result
    dataset = json.loads((run / "dataset" / "dataset.json").read_text())
    result["images_sampled"] = dataset.get("counts", {}).get("sampled") or len(_sample_ids(run))
    stages = {}
    for stage, start, end in _stage_windows(run):
        inside = [s for s in samples if start + startup_seconds <= s[0] < end + startup_seconds]
        if inside:
            stages[stage] = {"seconds": round(min(end, seconds) - start, 1),
                             "peak_tree_pss_mb": round(max(s[1] for s in inside) / 2**20, 1),
                             "peak_main_rss_mb": round(max(s[2] for s in inside) / 2**20, 1),
                             "peak_main_rss_file_mb": round(max(s[3] for s in inside) / 2**20, 1)}
    result["stages"] = stages
    result["largest_processes"] = [
        {**peak, "stage": next((stage for stage, start, end in _stage_windows(run)
                                if start + startup_seconds <= peak["seen_at_s"] < end + startup_seconds), None)}
        for peak in sorted(peaks.values(), key=lambda peak: -peak["peak_rss_mb"])[:4]]
    pixels = run / "dataset" / "pixels"
    result["pixel_cache_bytes"] = sum(p.stat().st_size for p in pixels.rglob("pixels.npy")) if pixels.exists() else 0
    result["stores"] = len(list((run / "features").glob("*/meta.json")))
    return result


def _sample_ids(run: Path) -> list:
    import pyarrow.parquet as pq

    return pq.read_table(run / "dataset" / "sample.parquet", columns=["image_id"]).column("image_id").to_pylist()


def pixel_cache_pays(source: Path, work: Path, variants: list[str], repeats: int) -> dict:
    """Does the pixel cache pay? On one ingest of ``source`` (the demo's cleaning), each variant
    (``backbones[@int8]``) is timed as pixel cache build + extract, and as extract decoding every image,
    alternated ``repeats`` times; the ingest both share is left out."""
    import contextlib

    from pintopic.dataset import ingest
    from pintopic.features import extract
    from pintopic.features.pixel_cache import build_pixel_caches

    run = work / f"pays-{source.name}"
    with contextlib.redirect_stdout(sys.stderr):
        ingest(source, run, exclude=["none", "other"], min_per_category=40, seed=0, progress=False)
    result = {"images": len(_sample_ids(run)), "variants": {}}
    for variant in variants:
        backbones, _, precision = variant.partition("@")
        names = backbones.split("+")
        timings: dict[str, list] = {"pixel_cache_and_extract": [], "extract_decoding": []}
        if precision:  # the INT8 graph is quantized once, before the timed runs (then found in the cache)
            with contextlib.redirect_stdout(sys.stderr):
                extract(run, names, precision=precision, progress=False)
        for _ in range(repeats):
            for label in timings:
                shutil.rmtree(run / "features", ignore_errors=True)
                shutil.rmtree(run / "dataset" / "pixels", ignore_errors=True)
                started = time.perf_counter()
                with contextlib.redirect_stdout(sys.stderr):
                    if label == "pixel_cache_and_extract":
                        build_pixel_caches(run, names, progress=False)
                    extract(run, names, precision=precision or "fp32", progress=False)
                timings[label].append(round(time.perf_counter() - started, 1))
        medians = {label: float(np.median(values)) for label, values in timings.items()}
        result["variants"][variant] = {**timings, "speedup_of_pixel_cache": round(
            medians["extract_decoding"] / medians["pixel_cache_and_extract"], 3), "load_average_after": os.getloadavg()}
        print(f"pixel cache pays? {variant}: {result['variants'][variant]}", file=sys.stderr)
    shutil.rmtree(run, ignore_errors=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="demo:1000,demo:3000,demo:6000,beyond:6000", help="config:images, comma-separated")
    parser.add_argument("--work", default="/tmp/pintopic-run-memory", help="datasets and runs (datasets are reused)")
    parser.add_argument("--limit-mb", type=float, default=1536.0)
    parser.add_argument("--set", action="append", default=[], help="extra config overrides for every run")
    parser.add_argument("--pixel-cache-pays", default="", help="variants timed with and without the pixel cache, "
                        "e.g. lite0+lite1+lite2,lite0,lite0@int8")
    parser.add_argument("--pays-images", type=int, default=1000)
    parser.add_argument("--pays-repeats", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the run folders")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from extract import print_report

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pintopic", "--version"], check=True, stdout=subprocess.DEVNULL)
    startup = time.perf_counter() - started  # the child's interpreter start, before run.json's clock starts
    result = {"benchmark": "run_memory", "limit_mb": args.limit_mb, "overrides": args.set,
              "load_average_at_start": os.getloadavg(), "runs": []}
    for item in [entry for entry in args.runs.split(",") if entry]:
        config, size = item.split(":")
        entry = measure_run(config, int(size), work, build_source(work, int(size)), args.set, startup)
        entry["load_average_after"] = os.getloadavg()
        result["runs"].append(entry)
        print(f"run_memory: {item}: peak RSS {entry['peak_rss_mb']} MB, tree PSS {entry['peak_tree_pss_mb']} MB "
              f"({entry['seconds']} s)", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(work / f"run-{config}-{size}", ignore_errors=True)
    if args.pixel_cache_pays:
        size = args.pays_images
        result["pixel_cache_pays"] = pixel_cache_pays(build_source(work, size), work, args.pixel_cache_pays.split(","),
                                                      args.pays_repeats)
    result["goal_met"] = all(entry["exit_code"] == 0 and entry["peak_rss_mb"] < args.limit_mb
                             and entry["peak_tree_pss_mb"] < args.limit_mb for entry in result["runs"])
    return print_report(result)


if __name__ == "__main__":
    sys.exit(main())
