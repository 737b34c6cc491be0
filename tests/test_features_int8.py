"""INT8 extraction (issue 22): calibrated on training images only, deterministic, its own store beside the FP32 one,
and a model trained on INT8 features predicts with that same INT8 graph."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from test_features_extract import FAST, tiny_run

from pintopic.errors import PintopicError
from pintopic.features import extract, load_features
from pintopic.runio import read_json

TINY = "timm:test_efficientnet"


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("PINTOPIC_CACHE", str(tmp_path / "cache"))  # a fresh cache: the test quantizes
    return tiny_run(tmp_path, per_category=10)


def test_int8_store_is_deterministic_calibrated_on_training_images_and_sits_beside_fp32(run, tmp_path):
    (fp32,) = extract(run, TINY, **FAST)
    (int8,) = extract(run, TINY, precision="int8", **FAST)
    assert int8 != fp32 and (fp32 / "meta.json").exists()
    meta = read_json(int8 / "meta.json")
    assert meta["precision"] == "int8" and read_json(fp32 / "meta.json")["precision"] == "fp32"
    assert meta["dtype"] == "float32" and meta["runtime"] == "onnxruntime"

    split = pd.read_parquet(run / "results" / "split.parquet")
    calibration = meta["quantization"]["calibration"]
    assert calibration["ids"] and set(calibration["ids"]) <= set(split.loc[split["part"] == "train", "image_id"])
    graph = tmp_path / "cache" / "onnx" / meta["quantization"]["graph"]
    assert graph.is_file() and graph.name.endswith(".int8.onnx")

    ids, vectors = load_features(int8)
    _, reference = load_features(fp32)
    cosine = (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
    assert not np.array_equal(vectors, reference) and cosine.mean() > 0.9

    assert extract(run, TINY, precision="int8", **FAST) == [int8]  # a rerun finds it
    assert extract(run, TINY, dtype="int8", **FAST) == [int8]  # --dtype int8 names the same store
    shutil.rmtree(int8)
    assert extract(run, TINY, precision="int8", **FAST) == [int8]  # same graph, same key ...
    again_ids, again = load_features(int8)
    assert list(again_ids) == list(ids) and np.array_equal(again, vectors)  # ... and identical vectors
    graph.unlink()  # quantized again from the same calibration set: the same vectors
    shutil.rmtree(int8)
    (fresh,) = extract(run, TINY, precision="int8", **FAST)
    np.testing.assert_array_equal(load_features(fresh)[1], vectors)


def test_an_int8_graph_runs_in_its_own_chunks_with_the_same_features(run, tmp_path, monkeypatch):
    import pintopic.features.runtime as runtime
    from pintopic.features.builder import build_backbone

    (int8,) = extract(run, TINY, precision="int8", **FAST)
    graph = tmp_path / "cache" / "onnx" / read_json(int8 / "meta.json")["quantization"]["graph"]
    backbone = build_backbone(TINY, pretrained=False)
    monkeypatch.setattr(runtime, "cpu_threads", lambda: 2)  # extraction's split layout: a single-threaded session per core
    quantized = runtime.make_runner(backbone, graph=graph, sessions=2)
    plain = runtime.make_runner(backbone, runtime="onnx", device="cpu", sessions=2)
    assert quantized.layout == plain.layout == "2 session(s) x 1 thread(s)"
    assert (quantized.chunk, plain.chunk) == (runtime.INT8_SINGLE_THREAD_CHUNK, runtime.SINGLE_THREAD_CHUNK)
    assert quantized.chunk != plain.chunk
    batch = np.random.default_rng(0).integers(0, 256, (19, *backbone.preprocessing.input_size), dtype=np.uint8)
    one_by_one = runtime.OnnxRunner(backbone, threads=1, graph=graph, chunk=1)
    assert np.array_equal(quantized(batch), one_by_one(batch))  # chunks of 8, 8 and 3 over two sessions


def test_a_model_trained_on_int8_features_predicts_with_the_int8_graph(run, tmp_path):
    from pintopic.classify import evaluate
    from pintopic.dataset import image_file, load_sample
    from pintopic.features import embed_images
    from pintopic.predict.predictor import Predictor

    (int8,) = extract(run, TINY, precision="int8", **FAST)
    evaluate(run, classifiers=["knn"], grids={"knn": {"k": [1]}}, cv=3, progress=False)
    model_dir = run / "results" / "models" / f"{int8.name}__knn"
    predictor = Predictor.load(model_dir)
    [(key, backbone)] = predictor.backbones.items()
    assert backbone["precision"] == "int8" and backbone["quantization"]["graph_sha256"] in key

    paths = [image_file(row) for _, row in load_sample(run).iterrows()][:5]
    features, failed = predictor.embed_files(paths)
    ids, stored = load_features(int8)
    order = [list(ids).index(i) for i in load_sample(run)["image_id"][:5]]
    assert not failed
    np.testing.assert_allclose(features[key], stored[order], atol=1e-6)  # the store's INT8 vectors, not FP32 ones
    fp32, _ = embed_images(TINY, paths, pretrained=False)
    assert not np.allclose(features[key], fp32, atol=1e-6)
    assert [p["top"][0]["category"] for p in predictor.predict_files(paths, top_k=1)]

    (tmp_path / "cache" / "onnx" / backbone["quantization"]["graph"]).unlink()
    import pintopic.features.embed

    pintopic.features.embed._BACKBONE_CACHE.clear()
    with pytest.raises(PintopicError, match="INT8 graph"):
        Predictor.load(model_dir).embed_files(paths)


def test_int8_is_refused_on_torch_and_unknown_precisions_are_clear(run):
    with pytest.raises(PintopicError, match="ONNX Runtime on the CPU"):
        extract(run, TINY, precision="int8", runtime="torch", **FAST)
    with pytest.raises(PintopicError, match="ONNX Runtime on the CPU"):
        extract(run, TINY, dtype="int8", runtime="torch", **FAST)
    with pytest.raises(PintopicError, match="unknown precision"):
        extract(run, TINY, precision="int4", **FAST)
    with pytest.raises(PintopicError, match="float32, float16 or int8"):
        extract(run, TINY, dtype="int4", **FAST)


def test_static_padding_keeps_the_numbers_of_tensorflow_same_padding():
    """timm's Conv2dSame (pads computed from the input shape at run time) becomes a constant pad: same outputs."""
    import copy
    import importlib

    import torch

    from pintopic.features.builder import build_backbone
    from pintopic.features.preprocess import pixels_to_features
    from pintopic.features.quantize import static_padding

    backbone = build_backbone("lite0", pretrained=False)
    network = pixels_to_features(backbone.model, backbone.preprocessing)
    same = importlib.import_module("timm.layers.conv2d_same").Conv2dSame
    assert any(isinstance(module, same) for module in network.modules())
    static = copy.deepcopy(network)
    static_padding(static, backbone.preprocessing.input_size)
    assert not any(isinstance(module, same) for module in static.modules())
    pixels = torch.randint(0, 256, (2, *backbone.preprocessing.input_size), dtype=torch.uint8)
    with torch.inference_mode():
        torch.testing.assert_close(static(pixels), network(pixels), rtol=0, atol=1e-6)


def test_squeeze_pools_become_global_average_pools_with_the_same_numbers(tmp_path):
    """Squeeze-excitation means (ReduceMean over H, W feeding a Conv) are rewritten as GlobalAveragePool, which ONNX
    Runtime can run on uint8; the features' own pooling is named to stay float; FP32 outputs are unchanged."""
    import onnx
    import onnxruntime as ort

    from pintopic.features.builder import build_backbone
    from pintopic.features.preprocess import pixels_to_features
    from pintopic.features.quantize import squeeze_pools
    from pintopic.features.runtime import export_onnx_graph

    backbone = build_backbone(TINY, pretrained=False)  # two squeeze-excitation blocks
    network = pixels_to_features(backbone.model, backbone.preprocessing)
    path = export_onnx_graph(network, backbone.preprocessing.input_size, tmp_path / "tiny.onnx")
    rewritten = tmp_path / "rewritten.onnx"
    rewritten.write_bytes(path.read_bytes())
    float_pools = squeeze_pools(rewritten)
    ops = [node.op_type for node in onnx.load(str(rewritten)).graph.node]
    before = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert before.count("ReduceMean") - ops.count("ReduceMean") == 2
    assert ops.count("GlobalAveragePool") == before.count("GlobalAveragePool") + 2 and len(float_pools) == 1
    pixels = np.random.default_rng(0).integers(0, 256, (3, *backbone.preprocessing.input_size), dtype=np.uint8)
    outputs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": pixels})[0]
               for p in (path, rewritten)]
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
