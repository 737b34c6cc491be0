"""Inference runtimes: ONNX Runtime on CPU (several times faster than eager PyTorch), PyTorch elsewhere.

A model is exported to ONNX once and cached as ``<cache>/onnx/<checksum>.onnx``, keyed by the
weights checksum, the model and the exporter's versions; PyTorch stays the reference (tests check the
two agree within 1e-4) and the runtime for GPUs. :func:`export_onnx_graph` and :func:`ort_sessions`
are the one export and session recipe, also used for the fine-tuning trunk.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from pintopic.errors import PintopicError
from pintopic.features.weights import cache_dir

ONNX_OPSET = 17

#: ONNX Runtime runs a batch in chunks of at most this many images: its arena holds every activation of the
#: largest chunk it has seen (~0.75 GB for Lite0 at 32 images, ~0.2 GB at 8), at no speed gain.
ORT_CHUNK = 8
#: The chunk of a single-threaded session (one per core: extraction from the pixel cache). Measured on 2 cores
#: (benchmarks/ort_chunk.py): 1.2-1.3x the images/s of chunks of 8 in FP32 and INT8, a quarter of the arena
#: (Lite2 FP32: +131 MB instead of +503 MB for two sessions), identical features. A session with several
#: threads keeps 8: smaller chunks leave its threads too little to share (INT8 0.8-0.9x at 2).
SINGLE_THREAD_CHUNK = 2
#: The chunk of a single-threaded session running an INT8 graph, whose activations are a quarter of FP32's:
#: EfficientNetV2-B0 1.10x the images/s of chunks of 2 (two runs), Lite0-2 within the machine's noise of it,
#: +41-91 MB of arena for two sessions (benchmarks/results/ort-chunk-2026-12-03-int8.json).
INT8_SINGLE_THREAD_CHUNK = 8


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> cuda, then mps, then cpu; an explicit device must exist."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise PintopicError("--device cuda asked for, but PyTorch sees no CUDA GPU")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise PintopicError("--device mps asked for, but PyTorch sees no MPS device")
    if device not in ("cpu", "cuda", "mps"):
        raise PintopicError(f"unknown device {device!r}; use auto, cpu, cuda or mps")
    return device


def cpu_threads() -> int:
    """Cores this process may use (respects affinity masks and container CPU sets)."""
    from pintopic.environment import usable_cores

    return usable_cores()


class TorchRunner:
    """Eager PyTorch inference: uint8 pixel batches in, float32 features out (the reference runtime)."""

    name = "torch"

    def __init__(self, backbone, device: str = "cpu"):
        import torch

        from pintopic.features.preprocess import pixels_to_features

        self.device = device
        self.network = pixels_to_features(backbone.model, backbone.preprocessing).to(device)
        self.network = self.network.to(memory_format=torch.channels_last)
        if device == "cpu":
            torch.set_num_threads(cpu_threads())

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.uint8)).to(self.device)
            return self.network(x).float().cpu().numpy()


def onnx_cache_path(backbone) -> os.PathLike:
    """Where the exported graph of this exact model (weights checksum, input size, versions) is cached."""
    import timm
    import torch

    key = "\n".join([backbone.spec.library, backbone.spec.model, backbone.weights_sha256,
                     repr(backbone.preprocessing), torch.__version__, timm.__version__, str(ONNX_OPSET)])
    if getattr(backbone.spec, "stages", 0):  # same weights, another graph (features.registry's @stagesN)
        key += f"\nstages={backbone.spec.stages}"
    return cache_dir("onnx") / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.onnx"


def export_onnx_graph(network, input_size, path, output_name: str = "features") -> os.PathLike:
    """Export ``network`` (uint8 NCHW pixels in) to ``path`` with a dynamic batch axis, atomically."""
    import torch

    from pintopic.runio import atomic_path

    example = torch.zeros(2, *input_size, dtype=torch.uint8)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network, (example,), str(tmp), dynamo=False, opset_version=ONNX_OPSET,
            input_names=["input"], output_names=[output_name],
            dynamic_axes={"input": {0: "batch"}, output_name: {0: "batch"}})
    return path


def ort_sessions(path, threads: int | None = None, sessions: int = 1) -> list:
    """``sessions`` ONNX Runtime CPU sessions of the graph at ``path`` sharing ``threads`` cores between them."""
    import onnxruntime as ort

    threads = threads or cpu_threads()
    count = max(1, min(int(sessions), threads))
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads // count)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Decoding workers share the cores: idle ORT threads must sleep, not spin.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return [ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]) for _ in range(count)]


#: Models with at least this many bytes of weights are exported in a child process (a start of ~8 s, worth it
#: for the memory; a test-sized network is exported here).
CHILD_EXPORT_MIN_BYTES = 4 * 2**20


def export_onnx(backbone) -> os.PathLike:
    """Export a backbone once (dynamic batch) into the cache; later calls reuse the file.

    The export runs in a fresh Python process given a pickled copy of the model: tracing and serialising
    take a few hundred MB (Lite2: ~300), which this process would otherwise keep as its peak for the rest
    of a run. A small model, one that cannot be pickled (holding a local class) or a failed child: exported here.
    """
    path = onnx_cache_path(backbone)
    if path.exists():
        return path
    weight_bytes = sum(tensor.numel() * tensor.element_size() for tensor in backbone.model.parameters())
    if weight_bytes >= CHILD_EXPORT_MIN_BYTES and _export_in_child(backbone.model, backbone.preprocessing, path):
        return path
    return export_model(backbone.model, backbone.preprocessing, path)


def export_model(model, preprocessing, path) -> os.PathLike:
    """:func:`export_onnx_graph` of ``model`` behind the uint8-pixels wrapper."""
    from pintopic.features.preprocess import pixels_to_features

    return export_onnx_graph(pixels_to_features(model, preprocessing).cpu(), preprocessing.input_size, path)


def _export_in_child(model, preprocessing, path) -> bool:
    """Whether a child ``python`` (a subprocess, so no caller's ``__main__`` is imported again) exported the model."""
    import pickle
    import subprocess
    import sys
    import tempfile

    import pintopic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".export-", suffix=".pkl") as handle:
        try:
            pickle.dump((model, preprocessing), handle, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - pickle raises several types for what it cannot copy
            return False
        handle.flush()
        source_root = str(Path(pintopic.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")]))}
        code = ("import pickle, sys; from pintopic.features.runtime import export_model; "
                "model, preprocessing = pickle.load(open(sys.argv[1], 'rb')); export_model(model, preprocessing, sys.argv[2])")
        done = subprocess.run([sys.executable, "-c", code, handle.name, str(path)], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    return done.returncode == 0 and path.exists()


class OnnxRunner:
    """ONNX Runtime inference on CPU with the cached exported graph (uint8 pixels in, features out).

    ``sessions > 1`` splits the threads into that many independent sessions, each running its share of
    a batch's chunks from its own Python thread (ORT releases the GIL): single-threaded sessions never
    wait at a barrier for a core another process holds. ``chunk`` (default: :data:`ORT_CHUNK` for sessions with several
    threads, else :data:`SINGLE_THREAD_CHUNK`, or :data:`INT8_SINGLE_THREAD_CHUNK` when ``graph`` is INT8: ``int8``)
    does not change the features: each image is computed on its own.
    """

    name = "onnxruntime"

    def __init__(self, backbone, threads: int | None = None, sessions: int = 1, graph: os.PathLike | None = None,
                 chunk: int | None = None, int8: bool = False):
        self.path = graph or export_onnx(backbone)
        threads = threads or cpu_threads()
        self.sessions = ort_sessions(self.path, threads, sessions)
        count = len(self.sessions)
        per_session = max(1, threads // count)
        single = INT8_SINGLE_THREAD_CHUNK if int8 else SINGLE_THREAD_CHUNK
        self.chunk = chunk or (single if per_session == 1 else ORT_CHUNK)
        self.layout = f"{count} session(s) x {per_session} thread(s)"
        self._pool = None
        if count > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(count, thread_name_prefix="pintopic-ort")

    def _run(self, session, batch: np.ndarray, starts: list[int]) -> list[np.ndarray]:
        return [session.run(None, {"input": batch[start:start + self.chunk]})[0] for start in starts]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.uint8)
        starts = list(range(0, max(len(batch), 1), self.chunk))
        if self._pool is None or len(starts) < 2:
            chunks = self._run(self.sessions[0], batch, starts)
        else:  # consecutive chunks per session, in order
            share = -(-len(starts) // len(self.sessions))
            futures = [self._pool.submit(self._run, session, batch, starts[k * share:(k + 1) * share])
                       for k, session in enumerate(self.sessions) if starts[k * share:(k + 1) * share]]
            chunks = [chunk for future in futures for chunk in future.result()]
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


class FlipAveraged:
    """Test-time augmentation: the mean of the features of the image and its mirror image."""

    def __init__(self, runner):
        self.runner = runner
        self.name = runner.name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return (self.runner(batch) + self.runner(np.ascontiguousarray(batch[..., ::-1]))) / 2.0


def make_runner(backbone, *, runtime: str = "auto", device: str = "auto", tta: str | None = None, sessions: int = 1,
                graph: os.PathLike | None = None):
    """The fastest runner for this device: ONNX Runtime on CPU for ``auto`` (``sessions``: see OnnxRunner), PyTorch on
    accelerators. ``graph``: an INT8 graph (:mod:`pintopic.features.quantize`), which runs on ONNX Runtime's CPU only."""
    if runtime not in ("auto", "torch", "onnx"):
        raise PintopicError(f"unknown runtime {runtime!r}; use auto, torch or onnx")
    if graph is not None:
        if runtime == "torch" or device not in ("auto", "cpu"):
            raise PintopicError("INT8 features run on ONNX Runtime on the CPU; use --runtime auto or onnx and --device "
                                "auto or cpu (or --precision fp32)")
        runner = OnnxRunner(backbone, sessions=sessions, graph=graph, int8=True)
        return FlipAveraged(runner) if tta == "flip" else runner
    device = resolve_device(device)
    if runtime == "onnx" and device != "cpu":
        raise PintopicError("--runtime onnx runs on the CPU only; use --device cpu or --runtime torch")
    runner = None
    if runtime == "onnx" or (runtime == "auto" and device == "cpu"):
        try:
            runner = OnnxRunner(backbone, sessions=sessions)
        except Exception as error:  # noqa: BLE001 - some models do not export; auto falls back to PyTorch
            if runtime == "onnx":
                raise PintopicError(f"ONNX export of {backbone.spec.name} failed: {error}") from None
            warnings.warn(f"ONNX export of {backbone.spec.name} failed ({error}); using PyTorch", RuntimeWarning,
                          stacklevel=2)
    if runner is None:
        runner = TorchRunner(backbone, device)
    if tta not in (None, "none", "flip"):
        raise PintopicError(f"unknown tta {tta!r}; use flip or nothing")
    return FlipAveraged(runner) if tta == "flip" else runner
