"""The Ray engine (issue 20): its overhead against the local engine, and the whole pipeline at scale; prints JSON.

    python benchmarks/engine.py compare --data ../shared/data/natural-images
    python benchmarks/engine.py scale --images 200000 --work /work/pintopic-scale      # hours; resumable
    python benchmarks/engine.py scale-report --work /work/pintopic-scale                # what it measured so far

``compare`` ingests and extracts (Lite0, real weights) the same images with the local engine and with Ray
on this machine (a private one-node Ray, all its CPUs), in the order local, Ray, Ray, local, and reports
each stage's images/s and the ratio Ray / local (the engine's overhead; goal >= 0.85). Ray is started once
beforehand, so the ratio measures the pipeline, not the cluster's start.

``scale`` generates ``--images`` small JPEGs (random crops, flips and colour shifts of the real photos
in ``--data``, seeded by index; folders layout), fits a k-NN on a small Lite0 run of ``--data``, then runs
ingest -> extract (Lite0) -> crawl-wide predict on Ray, each stage in a driver process of its own (as
``pintopic ingest``, ``extract`` and ``predict`` run). Every stage resumes where a killed run stopped
(the generation skips existing files; extract and predict keep finished shards). While it runs it
appends the progress of every stage (images done over time) and the resident memory of the driver and of
every Ray process to ``WORK/progress.jsonl`` and ``WORK/memory.jsonl``; ``scale-report`` turns them into
throughput per tenth of each stage (for ingest also MB/s and megapixels/s), peak RSS per process kind
and the projected time for the study's 1,069,477 images, on this machine and per added node of the same size.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import sys
import threading
import time
from itertools import pairwise
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
STUDY_IMAGES = 1_069_477


def _machine() -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from extract import machine_info

    return machine_info()


def _save(result: dict, name: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{datetime.date.today().isoformat()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    print()
    return path


def _ray_engine(address: str):
    """Engine settings for Ray at ``address``, connected now (a private cluster's start is not timed later)."""
    from pintopic.engine import EngineSettings
    from pintopic.engine.ray import connect

    started = time.perf_counter()
    connect(address)
    return EngineSettings(kind="ray", address=address), round(time.perf_counter() - started, 2)


# -- compare: the same run on both engines ---------------------------------------------------------------

def _timed(function, *args, **kwargs) -> tuple[object, float]:
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
        value = function(*args, **kwargs)
    return value, time.perf_counter() - started


def compare(args) -> int:
    import numpy as np

    from pintopic.dataset import ingest, load_sample
    from pintopic.features import extract, load_features

    data, work = Path(args.data).resolve(), Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    ray, ray_start_s = _ray_engine(args.ray_address)
    engines = {"local": None, "ray": ray}
    order = ["local", "ray", "ray", "local"][: max(2, args.runs)]
    runs: dict[str, dict[str, list]] = {name: {"ingest": [], "extract": []} for name in engines}
    stores: dict[str, Path] = {}
    load = {"start": os.getloadavg()}
    for number, name in enumerate(order):
        run = work / f"{name}-{number}"
        record, seconds = _timed(ingest, data, run, min_per_category=1, progress=False, engine=engines[name])
        runs[name]["ingest"].append({"seconds": round(seconds, 2), "files": record["counts"]["found"],
                                     "files_per_s": round(record["counts"]["found"] / seconds, 1),
                                     "load_average": os.getloadavg()})
        images = len(load_sample(run))
        (store,), seconds = _timed(extract, run, "lite0", batch_size=args.batch_size, progress=False, engine=engines[name])
        runs[name]["extract"].append({"seconds": round(seconds, 2), "images": images,
                                      "images_per_s": round(images / seconds, 1), "load_average": os.getloadavg()})
        stores.setdefault(name, store)
        print(f"engine: run {number} ({name}): ingest {runs[name]['ingest'][-1]['files_per_s']} files/s, "
              f"extract {runs[name]['extract'][-1]['images_per_s']} images/s", file=sys.stderr)
    load["end"] = os.getloadavg()
    (ids_local, X_local), (ids_ray, X_ray) = load_features(stores["local"]), load_features(stores["ray"])
    same_manifest = all((stores["local"].parent.parent / "dataset" / f).read_bytes()
                        == (stores["ray"].parent.parent / "dataset" / f).read_bytes()
                        for f in ("manifest.parquet", "sample.parquet"))
    result = {"benchmark": "engine-compare", "data": str(data), "backbone": "lite0", "batch_size": args.batch_size,
              "order": order, "ray_start_seconds": ray_start_s, "engine": json.loads(
                  (stores["ray"] / "meta.json").read_text())["engine"], "runs": runs, "load_average": load,
              "same_manifest_and_sample": same_manifest, "same_ids": list(ids_local) == list(ids_ray),
              "max_abs_feature_difference": float(np.abs(X_local - X_ray).max()), "goal": 0.85}
    for stage, unit in (("ingest", "files_per_s"), ("extract", "images_per_s")):
        rates = {name: float(np.median([entry[unit] for entry in runs[name][stage]])) for name in engines}
        result[f"{stage}_{unit}"] = {name: round(rate, 1) for name, rate in rates.items()}
        result[f"{stage}_ratio_ray_to_local"] = round(rates["ray"] / rates["local"], 3)
    result["goal_met"] = all(result[f"{stage}_ratio_ray_to_local"] >= 0.85 for stage in ("ingest", "extract"))
    result["machine"] = _machine()
    _save(result, f"engine-compare-{data.name if data.name != 'png' else data.parent.name}")
    return 0


# -- scale: a generated source of any size, the whole pipeline on Ray ----------------------------------

def _make_image(source_file: str, target: Path, seed: int) -> None:
    """A small JPEG of a random crop of ``source_file``: flipped or not, colours shifted, 64-128 px."""
    import numpy as np
    from PIL import Image, ImageEnhance

    rng = np.random.default_rng(seed)
    with Image.open(source_file) as opened:
        opened.draft("RGB", (256, 256))
        image = opened.convert("RGB")
    width, height = image.size
    area = rng.uniform(0.35, 1.0) * width * height
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    crop_w, crop_h = min(width, round((area * aspect) ** 0.5)), min(height, round((area / aspect) ** 0.5))
    left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
    image = image.crop((left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(0.7, 1.3))
    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.integers(-12, 13))) % 256
    side = int(rng.integers(64, 129))
    image = Image.fromarray(hsv, "HSV").convert("RGB").resize((side, max(1, round(side * crop_h / crop_w))),
                                                                 Image.Resampling.BICUBIC)
    temporary = target.with_name(target.name + ".tmp")
    image.save(temporary, format="JPEG", quality=int(rng.integers(70, 96)))
    os.replace(temporary, target)


def _generate_chunk(job: tuple[list[tuple[str, str]], str, int, int, int]) -> int:
    sources, folder, start, stop, seed = job
    made = 0
    for index in range(start, stop):
        category, source_file = sources[index % len(sources)]
        target = Path(folder) / category / f"{index // 1000:04d}" / f"img-{index:07d}.jpg"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            _make_image(source_file, target, seed * 10_000_019 + index)
            made += 1
    return made


def generate(data: Path, folder: Path, count: int, seed: int, processes: int) -> dict:
    """``count`` images under ``folder/<category>/<thousand>/`` (missing ones only); the category is the photo's."""
    from multiprocessing import get_context

    import numpy as np

    sources = [(category.name, str(path)) for category in sorted(data.iterdir()) if category.is_dir()
               for path in sorted(category.iterdir())]
    for stale in folder.rglob("*.tmp") if folder.exists() else ():  # a killed run's half-written file
        stale.unlink()
    order = np.random.default_rng(seed).permutation(len(sources))
    sources = [sources[i] for i in order]
    started = time.perf_counter()
    jobs = [(sources, str(folder), start, min(start + 2000, count), seed) for start in range(0, count, 2000)]
    with get_context("fork").Pool(processes) as pool:
        made = sum(pool.imap_unordered(_generate_chunk, jobs))
    return {"images": count, "made_now": made, "seconds": round(time.perf_counter() - started, 1), "seed": seed,
            "from_photos": len(sources)}


class _Log:
    """Appends JSON lines to a file (thread-safe)."""

    def __init__(self, path: Path):
        self.path, self.lock = path, threading.Lock()

    def write(self, record: dict) -> None:
        with self.lock, open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def _recording_bars(log: _Log, stage: dict, interval: float = 2.0):
    """Make every tqdm bar the stages open append ``(time, images done)`` to ``log`` (at most every ``interval`` s)."""
    import tqdm
    import tqdm.auto

    class Nowhere:
        def write(self, text):
            pass

        def flush(self):
            pass

    class RecordingBar(tqdm.tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.update(file=Nowhere(), disable=False)
            super().__init__(*args, **kwargs)
            self._logged = 0.0
            log.write({"time": time.time(), "stage": stage["name"], "event": "start", "total": self.total,
                       "desc": self.desc})

        def update(self, n=1):
            value = super().update(n)
            now = time.time()
            if now - self._logged >= interval or self.n == self.total:
                self._logged = now
                log.write({"time": now, "stage": stage["name"], "done": self.n, "total": self.total})
            return value

    tqdm.tqdm = tqdm.auto.tqdm = RecordingBar


def _rss_mb(pid: int | str) -> tuple[float, float] | None:
    """Resident MB of a process, and the part of it that is its own (anonymous) memory: not shared libraries'
    pages (torch's are 0.5 GB, shared by every process that imports it) nor Ray's object store pages."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(("VmRSS:", "RssAnon:")):
                    fields[line.split(":")[0]] = int(line.split()[1]) / 1024
    except OSError:
        return None
    return (round(fields["VmRSS"], 1), round(fields.get("RssAnon", 0.0), 1)) if "VmRSS" in fields else None


def _processes() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds used so far) of every process on this machine."""
    tick, found = os.sysconf("SC_CLK_TCK"), {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                found[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
            except (OSError, IndexError, ValueError):
                continue
    return found


def _descendants(root: int, table: dict[int, tuple[int, float]] | None = None) -> set[int]:
    """Every process started (directly or not) by ``root``: the private cluster's, not another session's."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in (table or _processes()).items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _ray_processes(table: dict[int, tuple[int, float]]) -> dict[int, str]:
    """pid -> name of the Ray processes this driver started (workers are titled ``ray::...``)."""
    found = {}
    for pid in _descendants(os.getpid(), table):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if command.startswith("ray::") or command.endswith(("/raylet", "/gcs_server")) or "ray/_private" in command:
            found[pid] = command.split("/")[-1][:60]
    return found


def _watch_memory(log: _Log, stage: dict, stop: threading.Event, interval: float = 5.0) -> None:
    while not stop.wait(interval):
        table = _processes()
        workers = {pid: [name, _rss_mb(pid)] for pid, name in _ray_processes(table).items()}
        cpu = sum(table[pid][1] for pid in _descendants(os.getpid(), table) | {os.getpid()} if pid in table)
        driver = stage.get("pid") or "self"
        log.write({"time": time.time(), "stage": stage["name"], "driver_rss_mb": (_rss_mb(driver) or (None,))[0],
                   "cpu_seconds": round(cpu, 2), "load_average": os.getloadavg(),
                   "workers": {str(pid): [name, *rss] for pid, (name, rss) in workers.items() if rss is not None}})


def model(args) -> int:
    """A k-NN on Lite0 features of 40 photos per category of ``--data`` (local engine), in WORK/model-run."""
    from pintopic.classify import evaluate
    from pintopic.dataset import ingest
    from pintopic.features import extract

    run = Path(args.work) / "model-run"
    with contextlib.redirect_stdout(sys.stderr):
        ingest(Path(args.data), run, per_category=40, progress=False)
        extract(run, "lite0", progress=False)
        evaluate(run, classifiers=["knn"], cv=3, grids={"knn": {"k": [5]}}, progress=False)
    return 0


def _stage_steps(args) -> dict:
    """The Ray stages of ``scale``, by name, as callables of engine settings."""
    from pintopic.dataset import ingest
    from pintopic.features import extract
    from pintopic.predict.crawl import predict_crawl

    work = Path(args.work)
    run = work / "run"

    def predict(ray):
        (model_dir,) = (work / "model-run" / "results" / "models").iterdir()
        return predict_crawl(model_dir, work / "source", work / "predictions.parquet", engine=ray,
                             shard_rows=args.shard_rows)

    return {"ingest": lambda ray: ingest(work / "source", run, min_per_category=1, engine=ray),
            "extract": lambda ray: extract(run, "lite0", engine=ray), "predict": predict}


def stage(args) -> int:
    """One Ray stage of ``scale``, this process its driver (as ``pintopic ingest|extract|predict`` runs it)."""
    work = Path(args.work)
    progress = _Log(work / "progress.jsonl")
    ray, ray_start_s = _ray_engine(args.ray_address)
    progress.write({"time": time.time(), "event": "ray", "stage": args.stage, "start_seconds": ray_start_s})
    _recording_bars(progress, {"name": args.stage})
    started = time.time()
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
        _stage_steps(args)[args.stage](ray)
    progress.write({"time": time.time(), "stage": args.stage, "event": "end", "seconds": round(time.time() - started, 1),
                    "load_average": os.getloadavg()})
    return 0


def scale(args) -> int:
    import subprocess

    data, work = Path(args.data).resolve(), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    progress, memory = _Log(work / "progress.jsonl"), _Log(work / "memory.jsonl")
    stage = {"name": "generate", "pid": None}
    stop = threading.Event()
    threading.Thread(target=_watch_memory, args=(memory, stage, stop), daemon=True).start()
    progress.write({"time": time.time(), "event": "run", "pid": os.getpid(), "load_average": os.getloadavg()})
    generated = generate(data, work / "source", args.images, args.seed, len(os.sched_getaffinity(0)))
    progress.write({"time": time.time(), "stage": "generate", "event": "end", **generated})
    common = ["--data", str(data), "--work", str(work), "--ray-address", args.ray_address,
              "--shard-rows", str(args.shard_rows)]
    # each stage (and the model's fit) in a process of its own, as the CLI runs them: the driver's memory
    # is that stage's alone, not what an earlier stage left in the same interpreter
    for name in ("model", "ingest", "extract", "predict"):
        stage["name"] = name
        command = [sys.executable, __file__, *(["model"] if name == "model" else ["stage", "--stage", name]), *common]
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        stage["pid"] = child.pid
        if child.wait():
            stop.set()
            raise SystemExit(f"the {name} stage failed (exit code {child.returncode}); rerun to resume")
    stop.set()
    return report(args)


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _flatness(rates: list) -> dict:
    """The middle tenths' median, and whether the last tenth keeps within 10% of it."""
    import numpy as np

    if len(rates) < 10 or not all(rates[3:7]) or not rates[-1]:
        return {}
    middle = float(np.median(rates[3:7]))
    return {"middle": round(middle, 2), "last_tenth_over_middle": round(rates[-1] / middle, 3),
            "flat": bool(abs(rates[-1] / middle - 1) <= 0.10)}


def _throughput(points: list[tuple[float, int]], total: int, cpu: list[tuple[float, float]],
                work: dict | None = None) -> dict:
    """Images/s in each tenth of a stage's images and, where the CPU seconds the run's processes used were
    sampled, images per CPU second (the machine is shared: that one shows whether the pipeline itself slows).
    ``work``: ``{unit: cumulative amount after each image, in the order the stage finishes them}`` adds that
    unit's rate per tenth (ingest's MB/s and megapixels/s)."""
    import numpy as np

    times, done = np.array([t for t, _ in points]), np.array([d for _, d in points])
    cpu_times, cpu_seconds = np.array([t for t, _ in cpu] or [0.0]), np.array([c for _, c in cpu] or [0.0])
    edges = [int(total * k / 10) for k in range(11)]
    rates, per_cpu = [], []
    per_unit: dict[str, list] = {unit: [] for unit in work or {}}
    for low, high in pairwise(edges):
        if done[-1] < high or high == low:
            break
        t_low, t_high = np.interp(low, done, times), np.interp(high, done, times)
        rates.append(round((high - low) / (t_high - t_low), 1) if t_high > t_low else None)
        for unit, cumulative in (work or {}).items():
            amount = cumulative[high] - cumulative[low]
            per_unit[unit].append(round(float(amount / (t_high - t_low)), 2) if t_high > t_low else None)
        used = np.interp(t_high, cpu_times, cpu_seconds) - np.interp(t_low, cpu_times, cpu_seconds)
        covered = len(cpu) > 1 and cpu_times[0] <= t_low and t_high <= cpu_times[-1] and used > 0
        per_cpu.append(round((high - low) / used, 2) if covered else None)
    summary = {"images_done": int(done[-1]), "images_total": total, "per_tenth_images_per_s": rates,
               **{f"{key}_images_per_s" if key == "middle" else key: value for key, value in _flatness(rates).items()}}
    for unit, unit_rates in per_unit.items():
        summary[f"per_tenth_{unit}_per_s"] = unit_rates
        summary[f"{unit}_per_s"] = _flatness(unit_rates)
    summary.update(_final_burst(times, done, edges[9], summary.get("middle_images_per_s")))
    if any(per_cpu):
        summary["per_tenth_images_per_cpu_second"] = per_cpu
        summary["per_cpu_second"] = _flatness(per_cpu)
    if len(done) > 1 and times[-1] > times[0]:
        summary["images_per_s"] = round(float((done[-1] - done[0]) / (times[-1] - times[0])), 1)
    return summary


def _final_burst(times, done, last_tenth_start: int, middle: float | None) -> dict:
    """The driver counts an image when its output reaches it, in order. When the last task ends, the outputs the
    pipeline still held (finished during the tenth before) arrive at once: the final progress interval. The last
    tenth's rate up to that interval is the pipeline's own; both are reported."""
    import numpy as np

    if len(done) < 3 or not middle or done[-2] <= last_tenth_start:
        return {}
    start = np.interp(last_tenth_start, done, times)
    if times[-2] <= start or times[-1] <= times[-2]:
        return {}
    rate = (done[-2] - last_tenth_start) / (times[-2] - start)
    return {"final_interval": {"images": int(done[-1] - done[-2]), "seconds": round(float(times[-1] - times[-2]), 2),
                               "images_per_s": round(float((done[-1] - done[-2]) / (times[-1] - times[-2])), 1)},
            "last_tenth_before_final_interval_images_per_s": round(float(rate), 1),
            "last_tenth_before_final_interval_over_middle": round(float(rate / middle), 3)}


def _ingest_work(run: Path, total: int) -> dict | None:
    """Cumulative MB and megapixels of the files in the order ingest starts them
    (:func:`~pintopic.dataset.verify.verification_order`), from the manifest (file size, decoded size)."""
    import numpy as np
    import pyarrow.parquet as pq

    from pintopic.dataset.verify import verification_order

    try:
        table = pq.read_table(run / "dataset" / "manifest.parquet", columns=["path", "file_size", "width", "height"])
    except (OSError, ValueError):
        return None
    if table.num_rows != total:  # a partial rerun decoded only some files: their order is not known here
        return None
    listing = np.argsort(np.array(table.column("path").to_pylist(), dtype=object), kind="stable")
    table = table.take(listing)  # the folders layout lists files in path order
    sizes = table.column("file_size").to_pylist()
    order = verification_order(sizes)
    values = {"mb": np.array([size or 0 for size in sizes], dtype=float),
              "megapixels": np.nan_to_num(table.column("width").to_numpy(zero_copy_only=False).astype(float)
                                          * table.column("height").to_numpy(zero_copy_only=False).astype(float))}
    return {unit: np.concatenate([[0.0], np.cumsum(amounts[order]) / 1e6]) for unit, amounts in values.items()}


def _stage_points(events: list[dict], name: str) -> tuple[list[tuple[float, int]], int] | None:
    """The last run's ``(time, images done)`` points of a stage's main bar (the one with the largest total)."""
    starts = [i for i, e in enumerate(events) if e.get("stage") == name and e.get("event") == "start" and e.get("total")]
    if not starts:
        return None
    first = max(starts, key=lambda i: (events[i]["total"], i))
    total = events[first]["total"]
    points = [(events[first]["time"], 0)]
    for event in events[first + 1:]:
        if event.get("stage") == name and event.get("event") == "start":
            break
        if event.get("stage") == name and "done" in event:
            points.append((event["time"], event["done"]))
    return points, total


def _memory_summary(samples: list[dict]) -> dict:
    kinds: dict[str, list[float]] = {}
    driver: dict[str, float] = {}
    for sample in samples:
        stage = sample["stage"]
        driver[stage] = max(driver.get(stage, 0.0), sample.get("driver_rss_mb") or 0.0)
        for name, rss, own in sample["workers"].values():
            kind = name.split("(")[0] if name.startswith("ray::") else name.split()[0]
            if "_Actor" in name:
                kind = "ray::embedding actor"
            elif "_cpu_task" in name:
                kind = "ray::decoding task"
            peak = kinds.setdefault(kind, [0.0, 0.0])
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], own)
    ray_stages = {stage: value for stage, value in driver.items() if stage in ("ingest", "extract", "predict")}
    return {"driver_peak_rss_mb_by_stage": driver, "driver_under_1gb": max(ray_stages.values(), default=0) < 1024,
            "over_time": _memory_over_time(samples),
            "worker_peak_rss_mb_by_kind": {kind: {"rss": rss, "anonymous": own}
                                           for kind, (rss, own) in sorted(kinds.items())}}


def _memory_over_time(samples: list[dict]) -> dict:
    """Per Ray stage, the peak RSS (MB) of the driver and of the largest embedding actor in each quarter of its
    samples: flat memory keeps the last quarter near the second."""
    found = {}
    for stage in ("ingest", "extract", "predict"):
        rows = [s for s in samples if s["stage"] == stage]
        if len(rows) < 4:
            continue
        quarters = [rows[len(rows) * k // 4: len(rows) * (k + 1) // 4] for k in range(4)]
        found[stage] = {
            "driver": [max(s.get("driver_rss_mb") or 0.0 for s in part) for part in quarters],
            "embedding_actor": [max([w[1] for s in part for w in s["workers"].values() if "_Actor" in w[0]] or [0.0])
                                for part in quarters]}
    return found


def report(args) -> int:
    work = Path(args.work)
    events, samples = _lines(work / "progress.jsonl"), _lines(work / "memory.jsonl")
    stages, finished = {}, {e["stage"] for e in events if e.get("event") == "end" and "stage" in e}
    cpu = sorted((s["time"], s["cpu_seconds"]) for s in samples + _lines(work / "cpu.jsonl") if "cpu_seconds" in s)
    for name in ("ingest", "extract", "predict"):
        found = _stage_points(events, name)
        if found:
            work_done = _ingest_work(work / "run", found[1]) if name == "ingest" else None
            stages[name] = {**_throughput(*found, cpu, work_done), "finished": name in finished}
    result = {"benchmark": "engine-scale", "work": str(work), "images": args.images,
              "generate": next((e for e in events if e.get("stage") == "generate" and e.get("event") == "end"), None),
              "complete": {"ingest", "extract", "predict"} <= finished, "stages": stages,
              "memory": _memory_summary(samples), "runs": [e for e in events if e.get("event") == "run"]}
    rates = {name: stage.get("middle_images_per_s") or stage.get("images_per_s") for name, stage in stages.items()}
    if all(rates.get(name) for name in ("ingest", "extract", "predict")):
        per_node = sum(STUDY_IMAGES / rates[name] for name in ("ingest", "extract", "predict"))
        cpus = len(os.sched_getaffinity(0))
        result["projection_1069477_images"] = {
            "assumes": f"throughput grows linearly with nodes like this one ({cpus} CPUs), data on a shared file system",
            "per_cpu_images_per_s": {name: round(rate / cpus, 1) for name, rate in rates.items()},
            "hours_by_nodes": {str(n): round(per_node / n / 3600, 2) for n in (1, 2, 4, 8, 16)}}
    result["machine"] = _machine()
    _save(result, "engine-scale")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("compare", "scale", "scale-report", "model", "stage"):
        command = sub.add_parser(name)
        command.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "natural-images"))
        command.add_argument("--ray-address", default="local", help="local: a private one-node Ray on this machine")
        command.add_argument("--batch-size", type=int, default=32)
        command.add_argument("--work", default=f"/tmp/pintopic-engine-{name}")
        command.add_argument("--runs", type=int, default=4, help="compare: runs in the order local, ray, ray, local")
        command.add_argument("--images", type=int, default=200_000)
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--shard-rows", type=int, default=4096, help="scale: rows per crawl-wide prediction part")
        command.add_argument("--stage", choices=("ingest", "extract", "predict"), help="stage: the one to run")
    args = parser.parse_args(argv)
    return {"compare": compare, "scale": scale, "scale-report": report, "model": model, "stage": stage}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
