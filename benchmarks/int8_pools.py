"""Squeeze-excitation gates as uint8 global average pools (issue 22 part 1), side by side in one run; prints JSON.

    python benchmarks/int8_pools.py [--backbone effnetv2_b0] [--rounds 11]

One backbone (random weights: the speed is the same) quantized twice with the same recipe and the same 128
openclipart calibration images: as extraction does now (each gate's mean over height and width rewritten as a
GlobalAveragePool, which ONNX Runtime runs on uint8 as QLinearGlobalAveragePool) and as before (a float
ReduceMean, which needs its whole input dequantized). Both INT8 graphs and the FP32 graph run in single-threaded
sessions on chunks of 8, as extraction from the pixel cache runs them, alternated ``--rounds`` times on 32 other
images; reported: images/s, the paired ratios, cosine to FP32 and each graph's time per operator type.
"""
from __future__ import annotations

import argparse
import collections
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
OPENCLIPART = Path("/usr/share/openclipart/png")
CHUNK = 8


def pixels(input_size, count: int) -> np.ndarray:
    """``count`` openclipart images (every 40th file, sorted) as uint8 NCHW at ``input_size``, resized plainly."""
    from PIL import Image

    _, height, width = input_size
    files = sorted(OPENCLIPART.rglob("*.png"))[::40][:count]
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize((width, height))).transpose(2, 0, 1) for f in files])


def graphs(backbone, calibration: np.ndarray, work: Path) -> dict:
    """FP32, INT8 with uint8 squeeze pools and INT8 with float ReduceMean gates, for ``backbone``."""
    from pintopic.features.preprocess import pixels_to_features
    from pintopic.features.quantize import quantize_graph, static_padding
    from pintopic.features.runtime import export_onnx_graph

    network = pixels_to_features(copy.deepcopy(backbone.model), backbone.preprocessing).cpu()
    static_padding(network, backbone.preprocessing.input_size)
    out = {"fp32": export_onnx_graph(network, backbone.preprocessing.input_size, work / "fp32.onnx")}
    batches = [calibration[i:i + 16] for i in range(0, len(calibration), 16)]
    for variant, pools in (("int8_squeeze_pools", True), ("int8_float_gates", False)):
        out[variant] = work / f"{variant}.onnx"
        quantize_graph(out["fp32"], out[variant], batches, uint8_squeeze_pools=pools)
    return out


def session(path: Path, profile_prefix: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    if profile_prefix:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def features(runner, images: np.ndarray) -> np.ndarray:
    name = runner.get_inputs()[0].name
    return np.concatenate([runner.run(None, {name: images[i:i + CHUNK]})[0] for i in range(0, len(images), CHUNK)])


def operator_shares(path: Path, images: np.ndarray, work: Path) -> dict:
    """Milliseconds per image and share of kernel time per operator type (ONNX Runtime's profiler, 3 passes)."""
    runner = session(path, str(work / path.stem))
    for _ in range(3):
        features(runner, images)
    events = json.loads(Path(runner.end_profiling()).read_text())
    times = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[event["args"]["op_name"]] += event["dur"]
    total = sum(times.values())
    return {"ms_per_image": round(total / 1000 / (3 * len(images)), 3),
            "shares": {op: round(t / total, 3) for op, t in times.most_common(8)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="effnetv2_b0")
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from int8 import cosine_rows

    from pintopic.features.builder import build_backbone

    backbone = build_backbone(args.backbone, pretrained=False)
    with tempfile.TemporaryDirectory(prefix="pintopic-int8-pools-") as folder:
        work = Path(folder)
        images = pixels(backbone.preprocessing.input_size, 160)
        calibration, test = images[:128], images[128:]
        paths = graphs(backbone, calibration, work)
        runners = {name: session(path) for name, path in paths.items()}
        reference = features(runners["fp32"], test)
        cosine = {name: round(float(cosine_rows(features(runner, test), reference).mean()), 4)
                  for name, runner in runners.items()}
        rates = {name: [] for name in runners}
        for _ in range(args.rounds):
            for name, runner in runners.items():
                started = time.perf_counter()
                features(runner, test)
                rates[name].append(len(test) / (time.perf_counter() - started))
        ratio = lambda a, b: round(float(np.median(np.array(rates[a]) / np.array(rates[b]))), 3)  # noqa: E731
        print(json.dumps({
            "benchmark": "int8_pools", "backbone": args.backbone, "weights": "random (pretrained=False)",
            "rounds": args.rounds, "images": len(test), "chunk": CHUNK, "threads": 1,
            "images_per_s": {name: round(float(np.median(v)), 1) for name, v in rates.items()},
            "ratio_to_fp32": {name: ratio(name, "fp32") for name in rates},
            "squeeze_pools_vs_float_gates": ratio("int8_squeeze_pools", "int8_float_gates"),
            "cosine_to_fp32": cosine, "operators": {name: operator_shares(path, test, work) for name, path in paths.items()},
        }, indent=2))


if __name__ == "__main__":
    main()
