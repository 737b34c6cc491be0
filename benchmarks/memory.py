"""Memory and scale (issue 8 part 3): peak memory of ingest and extract at growing dataset sizes; prints one JSON object.

    python benchmarks/memory.py --sizes 10000,100000

Generates small seeded JPEGs (distinct, so none is a duplicate) into ``--work``, ingests every one and
extracts ``lite0`` features (fastest runtime, random weights: same speed and memory) in child processes.
While a child runs, the summed proportional set size (PSS, shared pages counted once) of it and its
decoding workers is sampled; when it ends, ``os.wait4`` gives the kernel's peak RSS of the child (the
largest process of its tree, usually the main one). The store's size is compared with N x dim x dtype.
``--cap`` stops an extraction that runs too long and records the samples seen so far (memory against
images done), so the growth is still measured.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

CATEGORIES = ("animals", "art", "cars_motorcycles", "design", "food_drink", "gardening", "sports", "travel")


def _write_images(job: tuple[str, int, int, int]) -> int:
    """Write images ``start..stop`` (seeded noise, upscaled blocks) as JPEGs under ``folder/<category>/``."""
    import numpy as np
    from PIL import Image

    folder, start, stop, side = job
    for index in range(start, stop):
        path = Path(folder) / CATEGORIES[index % len(CATEGORIES)] / f"img-{index:07d}.jpg"
        if path.exists():
            continue
        blocks = np.random.default_rng(index).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(blocks).resize((side, side), Image.Resampling.BILINEAR).save(path, quality=90)
    return stop - start


def generate(folder: Path, count: int, side: int, processes: int) -> float:
    """Make sure ``folder`` holds exactly images 0..count-1; return the seconds spent."""
    started = time.perf_counter()
    for category in CATEGORIES:
        (folder / category).mkdir(parents=True, exist_ok=True)
    step = 2000
    jobs = [(str(folder), start, min(start + step, count), side) for start in range(0, count, step)]
    with Pool(processes) as pool:
        pool.map(_write_images, jobs)
    return time.perf_counter() - started


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo.extend(int(child) for child in handle.read().split())
        except OSError:
            pass
    return found


def proc_kb_field(path: str, field: str) -> int:
    """The ``field`` line (``"Pss:"``, ``"VmRSS:"``; in kB) of a /proc file, in bytes; 0 once the process is gone."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _pss_bytes(pid: int) -> int:
    return proc_kb_field(f"/proc/{pid}/smaps_rollup", "Pss:")


def run_measured(command: list[str], *, cap: float | None, progress=None, interval: float = 1.0) -> dict:
    """Run ``command``; sample its tree's PSS every ``interval`` s; return peaks, samples and the exit."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    samples, peak_pss, timed_out = [], 0, False
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        elapsed = time.perf_counter() - started
        pss = sum(_pss_bytes(p) for p in _tree(child.pid))
        peak_pss = max(peak_pss, pss)
        samples.append({"seconds": round(elapsed, 1), "tree_pss_mb": round(pss / 2**20, 1),
                        **({"images_done": progress()} if progress else {})})
        if cap is not None and elapsed > cap:
            timed_out = True
            os.killpg(child.pid, signal.SIGTERM)
            pid, status, usage = os.wait4(child.pid, 0)
            break
        time.sleep(interval)
    child.returncode = os.waitstatus_to_exitcode(status)
    stderr = child.stderr.read().decode(errors="replace")[-2000:]
    # keep at most ~60 samples in the JSON
    stride = max(1, len(samples) // 60)
    return {"seconds": round(time.perf_counter() - started, 1), "exit_code": child.returncode, "timed_out": timed_out,
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "peak_tree_pss_mb": round(peak_pss / 2**20, 1),
            "samples": samples[::stride] + samples[-1:], **({"stderr_tail": stderr} if child.returncode else {})}


def store_size(folder: Path) -> dict:
    import numpy as np

    parts = sorted(folder.glob("part-*.npy"))
    rows = sum(np.load(part, mmap_mode="r").shape[0] for part in parts)
    dim = np.load(parts[0], mmap_mode="r").shape[1] if parts else 0
    itemsize = np.load(parts[0], mmap_mode="r").dtype.itemsize if parts else 0
    vector_bytes = sum(part.stat().st_size for part in parts)
    other = {path.name: path.stat().st_size for path in folder.iterdir() if not path.name.startswith("part-")}
    ids_bytes = sum(size for name, size in other.items() if name.startswith("ids-"))
    return {"rows": rows, "dim": dim, "dtype_bytes": itemsize, "shards": len(parts),
            "vector_files_bytes": vector_bytes, "n_x_dim_x_dtype": rows * dim * itemsize,
            "vector_overhead_bytes": vector_bytes - rows * dim * itemsize,
            "id_files_bytes": ids_bytes, "other_bytes": sum(other.values()) - ids_bytes}


def measure(size: int, args, source_all: Path) -> dict:
    """Ingest and extract ``size`` images (hard links to the first ``size`` generated files)."""
    source = Path(args.work) / f"src-{size}"
    if not source.exists():
        tmp = source.with_name(source.name + ".tmp")
        for index in range(size):
            category = CATEGORIES[index % len(CATEGORIES)]
            (tmp / category).mkdir(parents=True, exist_ok=True)
            name = f"img-{index:07d}.jpg"
            if not (tmp / category / name).exists():
                os.link(source_all / category / name, tmp / category / name)
        tmp.rename(source)
    run = Path(args.work) / f"run-{size}"
    python = sys.executable
    ingest = run_measured([python, "-m", "pintopic", "ingest", str(source), str(run), "--min-per-category", "1", "-q"],
                          cap=None)
    features = run / "features"
    shutil.rmtree(features, ignore_errors=True)  # a fresh extraction, not the resumption of an earlier one

    def done() -> int:
        return sum(1 for _ in features.glob("*/ids-*.parquet")) * 1024

    extract = run_measured([python, "-m", "pintopic", "extract", str(run), "--backbone", args.backbone, "--no-pretrained",
                            "--batch-size", str(args.batch_size), "-q"], cap=args.cap, progress=done)
    seconds = extract["seconds"]
    result = {"images": size, "ingest": ingest, "extract": extract,
              "extract_images_per_s": round(size / seconds, 1) if not extract["timed_out"] and seconds else None}
    stores = list(features.glob("*/meta.json"))
    if stores:
        result["store"] = store_size(stores[0].parent)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated image counts")
    parser.add_argument("--work", default="/tmp/pintopic-memory", help="images and runs (reused by reruns)")
    parser.add_argument("--side", type=int, default=64, help="generated images are side x side JPEGs")
    parser.add_argument("--backbone", default="lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cap", type=float, default=None, help="stop an extraction after this many seconds")
    parser.add_argument("--limit-mb", type=float, default=1536.0)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from extract import print_report

    sizes = sorted(int(item) for item in args.sizes.split(","))
    source_all = Path(args.work) / "generated"
    generated_s = generate(source_all, max(sizes), args.side, max(1, len(os.sched_getaffinity(0))))
    result = {"benchmark": "memory", "backbone": args.backbone, "image_side": args.side, "batch_size": args.batch_size,
              "generate_seconds": round(generated_s, 1), "limit_mb": args.limit_mb, "sizes": {}}
    for size in sizes:
        result["sizes"][str(size)] = entry = measure(size, args, source_all)
        print(f"memory: {size} images: extract peak RSS {entry['extract']['peak_rss_mb']} MB, tree PSS "
              f"{entry['extract']['peak_tree_pss_mb']} MB", file=sys.stderr)
    peaks = [max(entry["extract"]["peak_rss_mb"], entry["extract"]["peak_tree_pss_mb"]) for entry in result["sizes"].values()]
    stores = [entry.get("store") for entry in result["sizes"].values()]
    result["goal_met"] = {
        "memory_under_limit": all(peak < args.limit_mb for peak in peaks),
        "complete": all(not entry["extract"]["timed_out"] for entry in result["sizes"].values()),
        # complete stores only (a capped extraction leaves none); 128 bytes is one .npy header per shard
        "store_is_n_dim_dtype_plus_constant": any(stores) and all(
            s["vector_overhead_bytes"] <= 128 * s["shards"] for s in stores if s is not None),
    }
    return print_report(result)


if __name__ == "__main__":
    sys.exit(main())
