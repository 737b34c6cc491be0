"""INT8 graphs: ONNX Runtime static quantization of a backbone's graph, calibrated on the run's own training images.

``extract --precision int8`` runs the backbone as a QDQ graph with per-channel int8 weights and uint8
activations (ONNX Runtime fuses it into QLinearConv/QLinearAdd kernels, which use VNNI where the CPU has it).
The activation ranges come from :data:`CALIBRATION_IMAGES` training images of the run's split (never a test
image), decoded exactly as extraction decodes them; the quantized graph is cached in pintopic's cache folder
as ``onnx/<key>.int8.onnx``, keyed by the backbone's FP32 graph, the calibration set (ids and file
contents) and the quantizer's settings and versions. Quantizing the same graph with the same calibration set
again finds the cached file, so every extraction with it gives identical vectors.

Convolutions, matrix products, additions, multiplications, sigmoids, ReLU/ReLU6 clips and pads are
quantized: the pooled features stay float (an 8-bit last layer costs several points of cosine similarity), and
so do LayerNorm and GELU. Quantizing the sigmoid and multiplication of SiLU and squeeze-excitation gates
(ONNX Runtime's QLinearSigmoid and QLinearMul) took EfficientNetV2-B0's INT8 graph from 1.2x to 1.56x FP32's
speed and ConvNeXt-T's from 1.6x to 1.8x, cosine to FP32 unchanged (0.997, 0.9996; model only, random weights).
The squeeze-excitation gates' means over height and width become uint8 global average pools
(:func:`squeeze_pools`), so they no longer dequantize their whole input.

TensorFlow-style "same" padding, computed from the input's shape at run time by timm's ``Conv2dSame``, is
made a constant pad first (the input size is fixed), so each pad runs in uint8 between two int8 convolutions
instead of breaking the graph into float islands.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from pintopic.errors import PintopicError

#: Training images whose activations set the quantization ranges (fewer when the split has fewer).
CALIBRATION_IMAGES = 256
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm", "Add", "Mul", "Sigmoid", "Clip", "Relu", "Pad", "GlobalAveragePool")
#: Bumped when the recipe below changes, so cached graphs and stores are remade.
RECIPE_VERSION = 3


def recipe() -> dict:
    """The quantizer's settings and versions: part of every INT8 graph's key and of its stores' meta.json."""
    from pintopic.environment import library_versions

    return {"version": RECIPE_VERSION, "method": "static", "format": "QDQ", "weights": "int8 per-channel",
            "activations": "uint8", "calibration": "MinMax", "ops": list(QUANTIZED_OPS),
            "squeeze_pools": "uint8 GlobalAveragePool (the features' own pooling stays float)",
            "versions": library_versions(("onnxruntime", "onnx"))}


def calibration_set(run_dir, tasks, *, split: str | None = None, test_size: float | None = None, seed: int = 0) -> dict:
    """The calibration images of an INT8 extraction: the first :data:`CALIBRATION_IMAGES` training images of the
    run's split in image_id order (a hash order, so a spread of categories), told without building any model.

    The split is the run's own (``results/split.*``), made now with these settings when the run has none
    yet, as a fine-tune does (:func:`pintopic.dataset.split.training_split`). Returns ``ids`` and ``sha256``
    (of each id with its file's content hash)."""
    from pintopic.dataset.manifest import load_sample
    from pintopic.dataset.split import training_split
    from pintopic.features.store import ids_checksum
    from pintopic.runio import run_paths

    frame, settings = training_split(run_paths(run_dir)["results"], load_sample(run_dir), test_size=test_size,
                                     split=split, seed=seed)
    training = set(frame.loc[frame["part"] == "train", "image_id"].astype(str))
    chosen = [task for task in tasks if task.image_id in training][:CALIBRATION_IMAGES]
    if not chosen:
        raise PintopicError("INT8 calibration needs training images, but the run's split has none in this sample")
    return {"images": len(chosen), "ids": [task.image_id for task in chosen],
            "sha256": ids_checksum([f"{task.image_id} {task.sha256}" for task in chosen]),
            "split": {key: settings[key] for key in ("split", "test_size", "seed")}}


def calibration_pixels(run_dir, tasks, preprocessing, batch: int) -> Iterable[np.ndarray]:
    """The calibration images' model inputs, from the run's pixel cache where it holds them, else decoded."""
    from pintopic.features.decoding import decoded_batches
    from pintopic.features.pixel_cache import open_pixel_cache
    from pintopic.features.preprocess import ImagePreprocessor

    cache = open_pixel_cache(run_dir, preprocessing)
    cached = [t for t in tasks if cache is not None and cache.covers(t.image_id, t.sha256)]
    for start in range(0, len(cached), batch):
        yield cache.get([t.image_id for t in cached[start:start + batch]])
    served = {t.image_id for t in cached}
    rest = [t for t in tasks if t.image_id not in served]
    batches = [range(start, min(start + batch, len(rest))) for start in range(0, len(rest), batch)]
    for _, arrays, _ in decoded_batches([t.decode_path for t in rest], ImagePreprocessor(preprocessing), batches, 0,
                                        originals=[t.path for t in rest]):
        if arrays is not None:
            yield arrays


def static_padding(network, input_size) -> None:
    """Replace timm's ``Conv2dSame`` (padding computed from the input's shape at run time) by a constant pad
    and a plain convolution, in place: the same numbers, a static graph for a fixed input size."""
    import importlib

    import torch

    same = importlib.import_module("timm.layers.conv2d_same").Conv2dSame
    padding = importlib.import_module("timm.layers.padding").get_same_padding
    sizes: dict[str, tuple] = {}

    def record(name):
        def hook(_, inputs) -> None:  # a pre-hook that returns something replaces the module's inputs
            sizes[name] = tuple(inputs[0].shape[-2:])
        return hook

    hooks = [module.register_forward_pre_hook(record(name)) for name, module in network.named_modules()
             if isinstance(module, same)]
    with torch.no_grad():
        network(torch.zeros(1, *input_size, dtype=torch.uint8))
    for hook in hooks:
        hook.remove()
    for name, height_width in sizes.items():
        conv = network.get_submodule(name)
        pads = [padding(size, conv.kernel_size[i], conv.stride[i], conv.dilation[i]) for i, size in enumerate(height_width)]
        plain = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                                conv.groups, conv.bias is not None)
        plain.load_state_dict(conv.state_dict())
        parent, _, attribute = name.rpartition(".")
        pad = (pads[1] // 2, pads[1] - pads[1] // 2, pads[0] // 2, pads[0] - pads[0] // 2)
        setattr(network.get_submodule(parent) if parent else network, attribute,
                torch.nn.Sequential(torch.nn.ZeroPad2d(pad), plain))


def graph_path(backbone, calibration: dict) -> Path:
    """Where the INT8 graph of this backbone and calibration set is cached."""
    from pintopic.features.runtime import onnx_cache_path
    from pintopic.runio import settings_hash

    key = settings_hash({"graph": onnx_cache_path(backbone).name, "calibration": calibration["sha256"],
                         "recipe": recipe()}, 32)
    return onnx_cache_path(backbone).with_name(f"{key}.int8.onnx")


def calibration_reader(batches: Iterable[np.ndarray]):
    """ONNX Runtime's calibration data reader over uint8 batches."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"input": np.ascontiguousarray(batch, dtype=np.uint8)}

    return Reader()


def quantized_graph(backbone, calibration: dict, pixels: Callable[[], Iterable[np.ndarray]]) -> Path:
    """The cached INT8 graph of ``backbone`` for this calibration set, quantized now (``pixels()`` gives the
    calibration batches) unless an earlier extraction already did."""
    import copy
    import tempfile

    from pintopic.features.preprocess import pixels_to_features
    from pintopic.features.runtime import export_onnx_graph
    from pintopic.runio import atomic_path

    path = graph_path(backbone, calibration)
    if path.exists():
        return path
    network = pixels_to_features(copy.deepcopy(backbone.model), backbone.preprocessing).cpu()
    static_padding(network, backbone.preprocessing.input_size)
    with tempfile.TemporaryDirectory(prefix="pintopic-int8-") as work:
        exported = export_onnx_graph(network, backbone.preprocessing.input_size, Path(work, "fp32.onnx"))
        with atomic_path(path) as tmp:
            quantize_graph(exported, tmp, pixels())
    return path


def quantize_graph(exported: os.PathLike, out: os.PathLike, batches: Iterable[np.ndarray], *,
                   uint8_squeeze_pools: bool = True) -> None:
    """The recipe (:func:`recipe`) applied to an exported FP32 graph, calibrated on uint8 ``batches``: ONNX
    Runtime's pre-processing, the squeeze pools rewritten (:func:`squeeze_pools`; ``False`` keeps the float
    ReduceMean gates, for comparison), static QDQ quantization written to ``out``."""
    import tempfile

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    with tempfile.TemporaryDirectory(prefix="pintopic-int8-prepare-") as work:
        prepared = Path(work, "prepared.onnx")
        quant_pre_process(str(exported), str(prepared), skip_symbolic_shape=True)
        float_pools = squeeze_pools(prepared) if uint8_squeeze_pools else []
        ops = [op for op in QUANTIZED_OPS if uint8_squeeze_pools or op != "GlobalAveragePool"]
        quantize_static(str(prepared), str(out), calibration_reader(batches), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=ops,
                        nodes_to_exclude=float_pools)


def squeeze_pools(path: os.PathLike) -> list[str]:
    """Rewrite, in place, each mean over height and width that feeds a convolution (a squeeze-excitation gate,
    ``x.mean((2, 3), keepdim=True)`` in timm) as a GlobalAveragePool, the same numbers; returns the names of the
    graph's other GlobalAveragePools (the features' own pooling), which stay float.

    ONNX Runtime has no uint8 ReduceMean, so each gate dequantized its whole input to float first; a quantized
    GlobalAveragePool becomes QLinearGlobalAveragePool and reads the uint8 tensor itself."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    feeds_conv = {name for node in graph.node if node.op_type == "Conv" for name in node.input[:1]}
    for index, node in enumerate(list(graph.node)):
        if node.op_type != "ReduceMean" or node.output[0] not in feeds_conv:
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attributes.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1] in constants:
            axes = constants[node.input[1]].tolist()
        if sorted(axes or []) == [2, 3] and attributes.get("keepdims", 1) == 1:
            graph.node.remove(node)
            graph.node.insert(index, helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output),
                                                      name=f"{node.name}/squeeze_pool"))
    onnx.save(model, str(path))
    return [node.name for node in graph.node
            if node.op_type == "GlobalAveragePool" and not node.name.endswith("/squeeze_pool")]


def file_sha256(path: os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_graph(quantization: dict) -> Path:
    """The INT8 graph a store (or a model trained on one) was made with, found in the cache and checked."""
    from pintopic.features.weights import cache_dir

    path = cache_dir("onnx") / str(quantization.get("graph", ""))
    if not path.is_file() or file_sha256(path) != quantization.get("graph_sha256"):
        raise PintopicError(
            f"the INT8 graph these features were made with ({quantization.get('graph')}) is not in the cache "
            f"folder {path.parent} (or differs); run `pintopic extract RUN --precision int8` on the run it came "
            "from to quantize it again, or use an FP32 model")
    return path
