"""Extraction pipeline vs the model alone (issue 8 part 1); prints one JSON object.

    python benchmarks/extract.py --backbone lite0 --data ../shared/data/natural-images

Ingests DATA into a run folder (kept in --work so reruns reuse the scan), then measures side by side:
model-only images/s on already-decoded tensors (PyTorch eager and ONNX Runtime, same batch size and
threads) and end-to-end images/s of ``extract`` (read, decode, preprocess, forward, write), interleaved
and compared as medians. Ingest's own files/s (decode-verify of every file plus the decode cache and the
pixel cache of the measured backbones, which extract then reads instead of decoding) is reported beside them.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path


def print_report(report: dict) -> int:
    """A benchmark's last step: the machine added, the report printed as one JSON object; the exit status 0."""
    report["machine"] = machine_info()
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


def machine_info() -> dict:
    from pintopic.environment import library_versions as _library_versions
    from pintopic.features.runtime import cpu_threads

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores_usable": cpu_threads(), "load_average_at_start": os.getloadavg(),
            "python": platform.python_version(), "platform": platform.platform(), "versions": _library_versions()}


def model_only(runner, batch, repeats: int) -> float:
    runner(batch)  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        runner(batch)
    return repeats * len(batch) / (time.perf_counter() - started)


def measure(name: str, run: Path, sample, args) -> dict:
    """Model-only (ORT in both thread layouts, eager) and end-to-end images/s for one backbone, interleaved.

    Each end-to-end extraction is bracketed by model-only measurements of ONNX Runtime as one session
    with every thread and as one single-threaded session per core (the layout extract uses when the
    pixel cache serves every row); each extraction is compared with the faster of the two around it.
    """
    import numpy as np

    from pintopic.dataset import image_file
    from pintopic.features import extract
    from pintopic.features.embed import prepared_backbone
    from pintopic.features.preprocess import ImagePreprocessor
    from pintopic.features.runtime import TorchRunner, cpu_threads

    started = time.perf_counter()
    backbone, onnx_runner = prepared_backbone(name, pretrained=args.pretrained, runtime="auto", device="cpu")
    setup_s = time.perf_counter() - started
    _, split_runner = prepared_backbone(name, pretrained=args.pretrained, runtime="auto", device="cpu",
                                        sessions=cpu_threads())
    torch_runner = TorchRunner(backbone, "cpu")
    preprocess = ImagePreprocessor(backbone.preprocessing)
    batch = np.stack([preprocess(image_file(row)) for _, row in sample.head(args.batch_size).iterrows()])

    ort_layouts = {onnx_runner.name: onnx_runner, f"{onnx_runner.name}_{cpu_threads()}x1": split_runner}
    figures = {**{key: [] for key in ort_layouts}, "torch_eager": []}
    figures["torch_eager"].append(model_only(torch_runner, batch, max(1, args.repeats // 2)))
    for key, runner in ort_layouts.items():
        figures[key].append(model_only(runner, batch, args.repeats))
    end_to_end, from_cache = [], None
    for _ in range(args.e2e_repeats):
        for folder in (run / "features").glob("*"):
            shutil.rmtree(folder)
        started = time.perf_counter()
        [folder] = extract(run, name, pretrained=args.pretrained, batch_size=args.batch_size, workers=args.workers,
                           runtime="auto", device="cpu", progress=False)
        end_to_end.append(len(sample) / (time.perf_counter() - started))
        meta = json.loads((folder / "meta.json").read_text())
        from_cache = {key: meta.get(key) for key in ("images_from_pixel_cache", "images_from_decode_cache", "runtime_layout")}
        for key, runner in ort_layouts.items():
            figures[key].append(model_only(runner, batch, args.repeats))
    model_only_ips = {key: float(np.median(values)) for key, values in figures.items()}
    fastest = max(model_only_ips.values())
    e2e = float(np.median(end_to_end))
    paired = paired_ratios(end_to_end, *(figures[key] for key in ort_layouts))
    return {
        "model": backbone.spec.model, "setup_seconds": round(setup_s, 2), **from_cache,
        "model_only_images_per_s": {key: round(value, 1) for key, value in model_only_ips.items()},
        "model_only_samples": {key: [round(v, 1) for v in values] for key, values in figures.items()},
        "end_to_end_images_per_s": round(e2e, 1), "end_to_end_samples": [round(v, 1) for v in end_to_end],
        "ratio_to_fastest_model_only": round(e2e / fastest, 3),
        "paired_ratios": [round(r, 3) for r in paired], "ratio_paired_median": round(float(np.median(paired)), 3),
        "goal_met": float(np.median(paired)) >= 0.85,
    }


def paired_ratios(end_to_end: list[float], *model_only_runs: list[float]) -> list[float]:
    """Each end-to-end figure over the mean of the model-only figures measured just before and after it
    (with several runtimes or layouts: the fastest of those means).

    Other sessions' load drifts over minutes; pairing compares each extraction with the model under the
    same load, which the medians of the whole run do not.
    """
    return [e2e / max((runs[i] + runs[i + 1]) / 2 for runs in model_only_runs) for i, e2e in enumerate(end_to_end)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="lite0", help="comma-separated; each is measured on the same ingest")
    parser.add_argument("--e2e-repeats", type=int, default=3, help="end-to-end extractions per backbone (median)")
    parser.add_argument("--no-decode-cache", action="store_true", help="ingest without the decode cache (for comparison)")
    parser.add_argument("--no-pixel-cache", action="store_true", help="ingest without the pixel cache (for comparison)")
    parser.add_argument("--data", required=True, help="a folders dataset (e.g. natural-images, openclipart png)")
    parser.add_argument("--per-category", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: extract's)")
    parser.add_argument("--repeats", type=int, default=4, help="batches timed for each model-only figure")
    parser.add_argument("--pretrained", action="store_true", help="real weights (default: random, same speed)")
    parser.add_argument("--work", default=None, help="keep the run here (a rerun then reuses the ingest); default: a fresh temp folder")
    args = parser.parse_args(argv)

    from pintopic.dataset import ingest, load_sample
    from pintopic.features.decoding import default_workers
    from pintopic.features.runtime import cpu_threads

    data = Path(args.data).resolve()
    run = Path(args.work or tempfile.mkdtemp(prefix="pintopic-bench-")) / f"{data.name}-{args.per_category}"
    backbones = [item.strip() for item in args.backbone.split(",") if item.strip()]
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
        summary = ingest(data, run, per_category=args.per_category, min_per_category=1, seed=0, progress=False,
                         decode_cache=not args.no_decode_cache, pixel_cache=[] if args.no_pixel_cache else backbones)
    ingest_s = time.perf_counter() - started
    scanned = summary.get("counts", {}).get("found")
    cache = summary.get("decode_cache")
    pixel_caches = [json.loads(path.read_text()) for path in sorted((run / "dataset" / "pixels").glob("*/meta.json"))]
    pixel_s = max((meta["seconds"] for meta in pixel_caches), default=0.0)  # one ingest builds them all in one pass

    sample = load_sample(run)
    workers = default_workers() if args.workers is None else args.workers
    result = {
        "benchmark": "extract", "data": str(data), "images": len(sample), "batch_size": args.batch_size,
        "threads": cpu_threads(), "workers": workers, "pretrained": args.pretrained,
        "ingest": {"seconds": round(ingest_s, 2), "files_scanned": scanned,
                   "files_per_s": round(scanned / ingest_s, 1) if scanned else None,
                   "decode_cache": cache and {key: cache[key] for key in ("side", "files", "bytes")},
                   "pixel_cache": pixel_caches and {
                       "seconds": round(pixel_s, 2), "images": len(sample),
                       "images_per_s": round(len(sample) / pixel_s, 1) if pixel_s else None,
                       "bytes": sum(meta["bytes"] for meta in pixel_caches),
                       "geometries": {"x".join(map(str, meta["shape"][2:])): meta["backbones"] for meta in pixel_caches}},
                   "seconds_without_pixel_cache": round(ingest_s - pixel_s, 2)},
        "backbones": {}, "goal": 0.85,
    }
    for name in backbones:
        result["backbones"][name] = measure(name, run, sample, args)
    result["goal_met"] = all(entry["goal_met"] for entry in result["backbones"].values())
    result["machine"] = machine_info()
    json.dump(result, sys.stdout, indent=2)
    print()
    if not args.work:
        shutil.rmtree(run.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
