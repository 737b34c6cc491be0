"""`pintopic serve` under load vs the extraction stage (issue 19); prints one JSON object and saves it.

    python benchmarks/serve.py --data ../shared/data/natural-images

Fits a Lite0 model on a few hundred natural-images photos (ingest, extract, evaluate logreg), then, in one run on
the same machine and the same photos (others than the training ones):

* a load test of ``pintopic serve`` (a subprocess on 127.0.0.1 and a free port, default settings: dynamic batching
  up to 16 images or 5 ms): 16 concurrent async httpx clients, one photo per request, a bounded number of requests
  and a time cap; throughput, latency percentiles, errors, the server's RSS (peak, and the peak during the first and
  the last 1,000 requests), the CPU seconds of server and load generator;
* ``extract`` throughput for lite0 with decoding (no pixel cache, no decode cache; ``pintopic extract`` in a
  subprocess, images/s of its compute loop) on the same photos, interleaved with the load test: the requests run in
  segments (one server process throughout, idle in between) with an extraction before each and after the last, and
  each segment's throughput is divided by the mean of the extractions around it (other jobs' load on a shared
  machine drifts over minutes; pairing compares the two under the same load);
* an overload run: 64 clients against a server with a small queue; every answer must be 200 or 503 (clients honour
  Retry-After), and the server must still answer afterwards.

Loopback only; every phase is bounded in requests and seconds and stops by itself.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from extract import machine_info  # the script's own folder is on sys.path

REPO = Path(__file__).resolve().parent.parent
GOALS = {"served_over_extract": 0.7, "p99_over_p50": 4.0, "rss_growth": 0.05}


def pintopic(*args: str, **options) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "pintopic", *args], check=True, env=env, **options)


def prepare(data: Path, work: Path, train_per_category: int, load_images: int) -> tuple[Path, list[Path], Path]:
    """``(model folder, photos for the load test, a folders dataset of those photos)``: a Lite0 + logreg model fitted
    on the first ``train_per_category`` photos of each category, and ``load_images`` other photos spread evenly."""
    from pintopic.classify import evaluate
    from pintopic.dataset import ingest
    from pintopic.features import extract

    categories = sorted(p.name for p in data.iterdir() if p.is_dir())
    train, load = work / "train-photos", work / "load-photos"
    per_category = -(-load_images // len(categories))
    chosen = []
    for category in categories:
        photos = sorted(p for p in (data / category).iterdir() if p.is_file())
        for folder, picked in ((train, photos[:train_per_category]),
                               (load, photos[train_per_category:train_per_category + per_category])):
            (folder / category).mkdir(parents=True, exist_ok=True)
            for photo in picked:
                if not (folder / category / photo.name).exists():
                    shutil.copy(photo, folder / category / photo.name)
        chosen += [load / category / p.name for p in photos[train_per_category:train_per_category + per_category]]
    run = work / "train-run"
    with contextlib.redirect_stdout(sys.stderr):
        ingest(train, run, layout="folders", progress=False, decode_cache=False)
        extract(run, ["lite0"], progress=False)
        evaluate(run, classifiers=["logreg"], grids={"logreg": {"C": [1.0]}}, cv=3, progress=False)
    (model,) = (run / "results" / "models").iterdir()
    return model, chosen[:load_images], load


def extract_throughput(load: Path, work: Path) -> dict:
    """``pintopic extract`` of the load photos with decoding (no pixel cache, no decode cache), every vector anew."""
    run = work / "extract-run"
    if not (run / "dataset" / "dataset.json").exists():
        pintopic("ingest", str(load), str(run), "--layout", "folders", "--no-decode-cache", "-q", stdout=subprocess.DEVNULL)
    shutil.rmtree(run / "features", ignore_errors=True)
    started = time.perf_counter()
    pintopic("extract", str(run), "--backbone", "lite0", "-q", stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    meta = json.loads(next((run / "features").glob("*/meta.json")).read_text())
    assert not meta.get("images_from_pixel_cache") and not meta.get("images_from_decode_cache")
    return {"images": meta["images_computed"], "images_per_s": meta["images_per_second"],
            "wall_seconds_with_startup": round(wall, 2), "runtime_layout": meta.get("runtime_layout"),
            "workers": meta.get("workers")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server(model: Path, *options: str):
    """``pintopic serve`` on 127.0.0.1 in a subprocess; yields ``(base URL, pid)`` once ready; stops it after."""
    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen([sys.executable, "-m", "pintopic", "serve", str(model), "--port", str(port), "-q",
                                *options], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {process.stderr.read()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready after 180 s")
            time.sleep(0.2)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def proc_status(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` memory field in bytes (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as handle:
        line = next(line for line in handle if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def load_test(url: str, name: str, photos: list[bytes], *, clients: int, requests: int, max_seconds: float,
                    pid: int | None = None, honour_retry_after: bool = False, first: int = 0) -> dict:
    """``clients`` async clients posting one photo per request until ``requests`` are done or time is up; ``first``:
    requests done before (a segment of a longer test), so RSS samples count the whole test's requests."""
    import httpx

    latencies, statuses, errors, rss = [], {}, [], []
    issued = first
    requests += first
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(http):
        nonlocal issued
        while issued < requests and time.monotonic() < deadline:
            index = issued
            issued += 1
            started = time.perf_counter()
            try:
                response = await http.post(f"/v1/models/{name}/predict",
                                           files={"images": (f"{index}.jpg", photos[index % len(photos)], "image/jpeg")})
            except httpx.HTTPError as error:
                errors.append(f"{type(error).__name__}: {error}")
                continue
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
            elif response.status_code == 503 and honour_retry_after:
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))

    async def sample_rss():
        while True:
            rss.append((first + len(latencies), proc_status(pid, "VmRSS")))
            await asyncio.sleep(0.25)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        sampler = asyncio.create_task(sample_rss()) if pid else None
        cpu, server_cpu, started = own_cpu_seconds(), pid and proc_cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - started
        cpu, server_cpu = own_cpu_seconds() - cpu, pid and proc_cpu_seconds(pid) - server_cpu
        if sampler:
            sampler.cancel()
        metrics = (await http.get("/metrics")).text
        alive = (await http.get("/healthz")).status_code == 200
    return {"wall": wall, "latencies": latencies, "statuses": statuses, "errors": errors, "rss": rss,
            "client_cpu": cpu, "server_cpu": server_cpu, "metrics": metrics, "alive": alive}


def batch_sizes(metrics_text: str, name: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    samples = {s.name: s.value for family in text_string_to_metric_families(metrics_text)
               if family.name == "pintopic_batch_size" for s in family.samples
               if s.labels.get("model") == name and s.name in ("pintopic_batch_size_sum", "pintopic_batch_size_count")}
    count = samples.get("pintopic_batch_size_count", 0)
    return {"batches": int(count), "mean_batch_size": round(samples.get("pintopic_batch_size_sum", 0) / count, 2) if count else None}


def merged(segments: list[dict]) -> dict:
    """One load test's figures from its segments (walls, CPU and counts added, latencies and samples joined)."""
    statuses: dict = {}
    for segment in segments:
        for code, count in segment["statuses"].items():
            statuses[code] = statuses.get(code, 0) + count
    return {"wall": sum(s["wall"] for s in segments), "latencies": [x for s in segments for x in s["latencies"]],
            "statuses": statuses, "errors": [e for s in segments for e in s["errors"]],
            "rss": [x for s in segments for x in s["rss"]], "client_cpu": sum(s["client_cpu"] for s in segments),
            "server_cpu": sum(s["server_cpu"] for s in segments), "metrics": segments[-1]["metrics"],
            "alive": segments[-1]["alive"]}


def summarise(run: dict, requests_window: int) -> dict:
    import numpy as np

    lat = np.asarray(run["latencies"]) * 1000
    done = len(lat)
    first = [rss for count, rss in run["rss"] if count < requests_window]
    last = [rss for count, rss in run["rss"] if count >= done - requests_window]
    p50, p95, p99 = (float(np.percentile(lat, q)) for q in (50, 95, 99)) if done else (None,) * 3
    return {
        "requests_ok": done, "statuses": {str(k): v for k, v in sorted(run["statuses"].items())},
        "errors": len(run["errors"]) + sum(v for k, v in run["statuses"].items() if k != 200),
        "error_examples": run["errors"][:3], "seconds": round(run["wall"], 2),
        "throughput_per_s": round(done / run["wall"], 2),
        "latency_ms": {"p50": round(p50, 1), "p95": round(p95, 1), "p99": round(p99, 1),
                       "mean": round(float(lat.mean()), 1), "max": round(float(lat.max()), 1)} if done else None,
        "rss_peak_first_requests_mb": round(max(first) / 2**20, 1) if first else None,
        "rss_peak_last_requests_mb": round(max(last) / 2**20, 1) if last else None,
        "rss_window_requests": requests_window,
        "server_cpu_seconds": round(run["server_cpu"], 2), "load_generator_cpu_seconds": round(run["client_cpu"], 2),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "natural-images"))
    parser.add_argument("--work", default=None, help="keep the runs here (reruns reuse the model); default: a temp folder")
    parser.add_argument("--train-per-category", type=int, default=40)
    parser.add_argument("--images", type=int, default=1000, help="distinct photos for the load test and extract")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--segments", type=int, default=3, help="load segments, each between two extractions")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=420)
    parser.add_argument("--overload-clients", type=int, default=64)
    parser.add_argument("--overload-requests", type=int, default=1500)
    parser.add_argument("--overload-queue", type=int, default=4)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)

    from pintopic.features.runtime import cpu_threads

    work = Path(args.work or tempfile.mkdtemp(prefix="pintopic-serve-bench-"))
    load_before = os.getloadavg()
    model, photo_paths, load_folder = prepare(Path(args.data), work, args.train_per_category, args.images)
    photos = [path.read_bytes() for path in photo_paths]
    window = min(1000, args.requests // 2)
    per_segment = -(-args.requests // args.segments)
    extracts, segments = [], []
    with server(model) as (url, pid):
        extracts.append(extract_throughput(load_folder, work))
        for index in range(args.segments):
            segments.append(asyncio.run(load_test(
                url, model.name, photos, clients=args.clients, first=index * per_segment,
                requests=min(per_segment, args.requests - index * per_segment),
                max_seconds=args.max_seconds / args.segments, pid=pid)))
            extracts.append(extract_throughput(load_folder, work))
        peak_rss = proc_status(pid, "VmHWM")
    run = merged(segments)
    paired = [len(segment["latencies"]) / segment["wall"] / ((extracts[i]["images_per_s"] + extracts[i + 1]["images_per_s"]) / 2)
              for i, segment in enumerate(segments)]
    with server(model, "--queue", str(args.overload_queue), "--max-files", "1") as (url, pid):
        overload = asyncio.run(load_test(url, model.name, photos, clients=args.overload_clients,
                                         requests=args.overload_requests, max_seconds=180, honour_retry_after=True))

    load = summarise(run, window)
    extract_ips = sum(e["images_per_s"] for e in extracts) / len(extracts)
    ratio = sorted(paired)[len(paired) // 2]  # the median segment
    machine_cpu = run["wall"] * cpu_threads()
    rss_growth = load["rss_peak_last_requests_mb"] / load["rss_peak_first_requests_mb"] - 1
    result = {
        "benchmark": "serve", "date": datetime.date.today().isoformat(),
        "model": {"folder": model.name, "backbone": "lite0", "classifier": "logreg",
                  "training_photos": args.train_per_category * len([p for p in Path(args.data).iterdir() if p.is_dir()])},
        "server_settings": "defaults: max_batch 16, max_wait_ms 5, queue 64, decoding threads = cores",
        "load": {"clients": args.clients, "requests": args.requests, "distinct_photos": len(photos), **load,
                 **batch_sizes(run["metrics"], model.name), "server_peak_rss_mb": round(peak_rss / 2**20, 1),
                 "rss_growth_last_vs_first": round(rss_growth, 4),
                 "load_generator_cpu_share_of_machine": round(run["client_cpu"] / machine_cpu, 3),
                 "load_generator_cpu_share_of_cpu_used": round(run["client_cpu"] / (run["client_cpu"] + run["server_cpu"]), 3)},
        "segments": [{"requests_ok": len(seg["latencies"]), "seconds": round(seg["wall"], 2),
                      "throughput_per_s": round(len(seg["latencies"]) / seg["wall"], 2),
                      "over_extract_around_it": round(r, 3)} for seg, r in zip(segments, paired)],
        "extract": {"runs": extracts, "mean_images_per_s": round(extract_ips, 2)},
        "served_over_extract": round(ratio, 3),
        "served_over_extract_whole_run": round(load["throughput_per_s"] / extract_ips, 3),
        "server_cpu_ms_per_image": round(1000 * run["server_cpu"] / max(1, load["requests_ok"]), 1),
        "overload": {"clients": args.overload_clients, "queue": args.overload_queue, "requests": args.overload_requests,
                     "statuses": {str(k): v for k, v in sorted(overload["statuses"].items())},
                     "transport_errors": len(overload["errors"]), "error_examples": overload["errors"][:3],
                     "only_200_and_503": set(overload["statuses"]) <= {200, 503} and not overload["errors"],
                     "server_alive_after": overload["alive"], "seconds": round(overload["wall"], 2)},
        "goals": GOALS,
        "load_average": {"before": [round(v, 2) for v in load_before], "after": [round(v, 2) for v in os.getloadavg()]},
        "machine": machine_info(),
    }
    p50, p99 = load["latency_ms"]["p50"], load["latency_ms"]["p99"]
    result["goals_met"] = {"served_over_extract": ratio >= GOALS["served_over_extract"],
                           "p99_over_p50": p99 <= GOALS["p99_over_p50"] * p50, "zero_errors": load["errors"] == 0,
                           "rss_flat": rss_growth <= GOALS["rss_growth"],
                           "overload_only_200_and_503": result["overload"]["only_200_and_503"]}
    text = json.dumps(result, indent=2)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"serve-{result['date']}.json").write_text(text + "\n")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
