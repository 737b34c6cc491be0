"""ONNX Runtime chunk size: images/s and activation memory per chunk, FP32 and INT8 (issue 22 part 3); prints JSON.

    python benchmarks/ort_chunk.py --chunks 1,2,4,8 --backbones lite0,lite1,lite2

ONNX Runtime runs a batch in chunks of ``ORT_CHUNK`` images (``pintopic.features.runtime``), and its arena keeps
the activations of the largest chunk it has run. For each backbone (real weights where they are available here) and
precision, on 32 real openclipart images preprocessed as extraction does, in both of extraction's layouts
(``split``: one single-threaded session per core, each running its share of a batch, when the pixel cache serves
every row; ``shared``: one session with every core, when extraction decodes and for prediction):

- memory: for each chunk size, a fresh process loads the sessions, runs the batch 3 times and reports how much
  its resident set grew from loading to the end (the arenas' activations);
- speed: in one process, the chunk sizes alternated ``--rounds`` times (each round every chunk size once, the
  batch ``--repeats`` times), median images/s per chunk size and its ratio to the current default's.

The INT8 graph is calibrated on the measured batch itself (speed does not depend on the ranges), cached like a
run's; the FP32 graph is the cached export extraction uses.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
OPENCLIPART = Path("/usr/share/openclipart/png")
BATCH = 32


def _images(count: int) -> list[Path]:
    files = sorted(p for p in OPENCLIPART.rglob("*.png") if p.is_file())
    if len(files) < count:
        raise SystemExit(f"{OPENCLIPART} is missing or small (apt-get install openclipart-png)")
    return [files[i] for i in np.linspace(0, len(files) - 1, count).astype(int)]


def _inputs(name: str, precision: str):
    """``(backbone, batch, graph)``: the backbone (real weights where they are available here, random ones
    otherwise: same speed), 32 preprocessed openclipart images, and the INT8 graph calibrated on them (``None``
    for FP32: the cached export)."""
    from pintopic.features.builder import build_backbone, weights_available
    from pintopic.features.preprocess import ImagePreprocessor
    from pintopic.features.quantize import quantized_graph
    from pintopic.features.registry import resolve_backbone

    backbone = build_backbone(name, pretrained=weights_available(resolve_backbone(name)))
    preprocess = ImagePreprocessor(backbone.preprocessing)
    batch = np.stack([preprocess(str(path)) for path in _images(BATCH)])
    graph = None
    if precision == "int8":
        graph = quantized_graph(backbone, {"sha256": f"benchmarks/ort_chunk.py {BATCH} openclipart images"},
                                lambda: [batch])
    return backbone, batch, graph


def _runner(backbone, graph, chunk: int, layout: str):
    """An ONNX Runtime runner with this chunk size in ``layout``: ``split`` (one single-threaded session per core:
    extraction from the pixel cache) or ``shared`` (one session with every core: extraction that decodes,
    crawl-wide prediction, the service)."""
    from pintopic.features.runtime import OnnxRunner, cpu_threads

    sessions = cpu_threads() if layout == "split" else 1
    return OnnxRunner(backbone, sessions=sessions, graph=graph, chunk=chunk)


def _resident_mb() -> float:
    with open("/proc/self/status") as handle:
        fields = dict(line.split(":", 1) for line in handle)
    return int(fields["VmRSS"].split()[0]) / 1024


def memory_child(name: str, precision: str, chunk: int, layout: str) -> None:
    backbone, batch, graph = _inputs(name, precision)
    runner = _runner(backbone, graph, chunk, layout)
    before = _resident_mb()
    for _ in range(3):
        runner(batch)
    print(json.dumps({"loaded_mb": round(before, 1), "grown_mb": round(_resident_mb() - before, 1)}))


def memory(name: str, precision: str, chunks: list[int], layout: str) -> dict:
    figures = {}
    for chunk in chunks:
        output = subprocess.run([sys.executable, __file__, "--child", f"{name},{precision},{chunk},{layout}"], check=True,
                                capture_output=True, text=True).stdout
        figures[str(chunk)] = json.loads(output.strip().splitlines()[-1])
    return figures


def speed(name: str, precision: str, chunks: list[int], rounds: int, repeats: int, default: int, layout: str) -> dict:
    backbone, batch, graph = _inputs(name, precision)
    runners = {chunk: _runner(backbone, graph, chunk, layout) for chunk in chunks}
    reference = runners[default](batch)
    samples = {chunk: [] for chunk in chunks}
    for _ in range(rounds):
        for chunk, runner in runners.items():
            started = time.perf_counter()
            for _ in range(repeats):
                runner(batch)
            samples[chunk].append(repeats * len(batch) / (time.perf_counter() - started))
    base = np.array(samples[default])
    return {str(chunk): {"images_per_s": round(float(np.median(values)), 1), "samples": [round(v, 1) for v in values],
                         "ratio_to_default": round(float(np.median(np.array(values) / base)), 3),
                         "max_abs_difference_to_default": float(np.abs(runners[chunk](batch) - reference).max())}
            for chunk, values in samples.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="lite0,lite1,lite2")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--chunks", default="1,2,4,8")
    parser.add_argument("--layouts", default="split,shared", help="split: a single-threaded session per core; shared: one")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2, help="batches of 32 per chunk size and round")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, precision, chunk, layout = args.child.split(",")
        memory_child(name, precision, int(chunk), layout)
        return 0
    from pintopic.environment import library_versions
    from pintopic.features.runtime import ORT_CHUNK, cpu_threads

    chunks = [int(c) for c in args.chunks.split(",")]
    default = ORT_CHUNK if ORT_CHUNK in chunks else chunks[-1]
    report = {"benchmark": "ort_chunk", "default_chunk": ORT_CHUNK, "batch": BATCH, "sessions": cpu_threads(),
              "load_average_at_start": os.getloadavg(), "results": {}}
    for layout in args.layouts.split(","):
        for name in args.backbones.split(","):
            for precision in args.precisions.split(","):
                key = f"{name} {precision} {layout}"
                report["results"][key] = {"memory": memory(name, precision, chunks, layout),
                                          "speed": speed(name, precision, chunks, args.rounds, args.repeats, default, layout)}
                print(key, json.dumps(report["results"][key]["speed"]), file=sys.stderr)
    report["load_average_after"] = os.getloadavg()
    report["machine"] = {"cpus": cpu_threads(), "versions": library_versions(("onnxruntime", "numpy"))}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
