"""The collector against the fake Pinterest with 20 ms per request (issue 18); prints one JSON object.

    python benchmarks/collect.py [--pins 250,251,...] [--concurrency 8] [--sequential 300]

The fake (tests/fake_pinterest.py) runs in its own process on 127.0.0.1 and serves real photos
(natural-images, resized to ``--width`` px wide like Pinterest's ``600x`` size). Measured in one run:

* **list calls**: the fake counts every request by endpoint; board-pin listing calls must equal
  sum(ceil(pins / 250)) over the boards (user, boards and sections calls are reported apart);
* **download throughput**: the collector (``pintopic collect`` in a child process, default settings apart
  from ``--concurrency``) in images/s over the whole collection, against a sequential one-at-a-time
  downloader (httpx, one connection, no checks, no writes) fetching the same images from the same server
  before and after the collection; the ratio is the figure (goal >= 5x);
* **peak memory**: the collector process's peak RSS (``os.wait4``'s ru_maxrss) for the whole collection
  (goal < 300 MB at 10,000 pins).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PINS = ",".join(["250", "251", "499", "500", "1", "1000", "750", "249"] + ["250"] * 26)  # 10,000 pins, 34 boards


def start_fake(args, work: Path) -> tuple[subprocess.Popen, dict]:
    info = work / "fake.json"
    command = [sys.executable, str(REPO / "tests" / "fake_pinterest.py"), "--pins", args.pins, "--images", str(args.images),
               "--width", str(args.width), "--latency", str(args.latency), "--info", str(info)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, cwd=REPO)
    deadline = time.monotonic() + 120
    while not info.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the fake Pinterest did not start")
        time.sleep(0.1)
    return process, json.loads(info.read_text())


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sequential(info: dict, count: int, size: str) -> dict:
    """One image at a time over one kept-alive connection: the baseline."""
    import httpx

    started = time.perf_counter()
    total = 0
    with httpx.Client(timeout=30) as client:
        for index in range(count):
            response = client.get(f"http://{info['cdn_host']}/{size}/img{index}.jpg")
            response.raise_for_status()
            total += len(response.content)
    seconds = time.perf_counter() - started
    return {"images": count, "seconds": round(seconds, 3), "images_per_second": round(count / seconds, 1), "bytes": total}


def run_collector(info: dict, args, work: Path) -> dict:
    tokens = work / "tokens.txt"
    tokens.write_text(info["token"] + "\n")
    out = work / "out"
    command = [sys.executable, "-m", "pintopic", "collect", str(out), "--tokens", str(tokens), "--api-base", info["api_base"],
               "--allow-host", info["cdn_host"], "--concurrency", str(args.concurrency), "--image-size", args.size, "--quiet"]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the collector failed ({os.waitstatus_to_exitcode(status)})")
    summary = json.loads((out / "collect.json").read_text())
    saved = summary["this_run"]["pins"].get("saved", 0)
    seconds = summary["this_run"]["seconds"]
    return {"wall_seconds": round(wall, 3), "collect_seconds": seconds, "pins_saved": saved,
            "pins_on_disk": summary["counts"]["pins_on_disk"], "images_per_second": round(saved / seconds, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "cpu_ms_per_image": round((usage.ru_utime + usage.ru_stime) / max(saved, 1) * 1000, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "requests": summary["this_run"]["requests"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pins", default=DEFAULT_PINS, help="pins per board (one user)")
    parser.add_argument("--images", type=Path, default=REPO.parent / "shared" / "data" / "natural-images")
    parser.add_argument("--width", type=int, default=600)
    parser.add_argument("--size", default="600x", help="--image-size the collector asks for")
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sequential", type=int, default=300, help="images the baseline downloads, before and after")
    parser.add_argument("--save", type=Path, default=None, help="default: benchmarks/results/collect-<date>.json")
    args = parser.parse_args()

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pintopic-collect-bench-") as folder:
        work = Path(folder)
        server, info = start_fake(args, work)
        try:
            before = sequential(info, args.sequential, args.size)
            server_cpu = cpu_seconds(server.pid)
            collector = run_collector(info, args, work)
            collector["fake_server_cpu_seconds"] = round(cpu_seconds(server.pid) - server_cpu, 2)
            after = sequential(info, args.sequential, args.size)
            import httpx

            served = httpx.get(info["api_base"].replace("/v5", "/_fake/counts")).json()
        finally:
            server.stdin.close()
            server.wait(timeout=30)
    pins = [int(n) for n in args.pins.split(",")]
    expected = sum(math.ceil(n / 250) for n in pins)
    baseline = (before["images_per_second"] + after["images_per_second"]) / 2
    result = {
        "benchmark": "collect", "date": dt.date.today().isoformat(), "python": platform.python_version(),
        "cpus": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "latency_s": args.latency, "concurrency": args.concurrency,
        "image_size": args.size, "image_bytes_mean": round(info["image_bytes"]), "boards": len(pins), "pins": sum(pins),
        "list_calls": {"board_pins": served["counts"].get("board_pins", 0), "expected_sum_ceil_pins_250": expected,
                       "equal": served["counts"].get("board_pins", 0) == expected,
                       "page_sizes_requested": served["page_sizes"],
                       "apart": {kind: served["counts"].get(kind, 0) for kind in ("user_account", "boards", "sections", "section_pins")}},
        "collector": collector,
        "sequential_before": before, "sequential_after": after,
        "throughput_ratio": round(collector["images_per_second"] / baseline, 2), "throughput_goal": 5.0,
        "peak_rss_goal_mb": 300,
    }
    text = json.dumps(result, indent=2)
    print(text)
    target = args.save or REPO / "benchmarks" / "results" / f"collect-{result['date']}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text + "\n")


if __name__ == "__main__":
    main()
