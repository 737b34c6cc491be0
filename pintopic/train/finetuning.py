"""Fine-tuning: train the last stages of a timm backbone with a classification head on a run's training part.

CPU-friendly by design: the frozen early stages (the "trunk") run once per image and view, and their
activations are cached in ``RUN/finetune/<name>/cache/``; only the last stages (the "tail") and a linear
head are trained, on the cache, with augmentation at the feature-map level (random resized crop of the
map, horizontal flip) on top of the cached image-level views (the plain centre crop plus optional random
resized crop + flip views). Early stopping uses a validation fold carved from the training part; the
test part of ``RUN/results/split.parquet`` is never read. Every epoch ends with an atomic checkpoint, so a
killed run resumes where it stopped.

The result, ``RUN/finetune/<name>/`` (``model.safetensors`` + ``finetune.json``), is a backbone like any
other: ``finetuned:<name>`` (inside the run) or ``finetuned:<folder>`` anywhere.
"""
from __future__ import annotations

import os
import time
import zlib
from pathlib import Path

import numpy as np

from pintopic.errors import PintopicError
from pintopic.features.finetuned import (
    FINETUNE_JSON,
    HEAD_FILE,
    MODEL_FILE,
    PREFIX,
    finetune_root,
)
from pintopic.safeio import one_line, open_regular

CHECKPOINT_FILE = "checkpoint.safetensors"
CHECKPOINT_JSON = "checkpoint.json"
CACHE_CHUNK_ROWS = 256
#: Bumped when a change here changes the trained weights, so stale checkpoints are not resumed.
TRAINING_VERSION = 1


# -- splitting a timm model into frozen trunk and trainable tail --------------------------------------

def split_model(model, stages: int):
    """``(trunk, tail)`` modules sharing ``model``'s parameters: tail(trunk(x)) == model(x) (pooled features)."""
    import torch
    from timm.models.convnext import ConvNeXt
    from timm.models.efficientnet import EfficientNet

    if isinstance(model, EfficientNet):
        stem, blocks, after, pooling = [model.conv_stem, model.bn1], model.blocks, [model.conv_head, model.bn2], model.global_pool
    elif isinstance(model, ConvNeXt):
        stem, blocks, after, pooling = [model.stem], model.stages, [model.norm_pre], model.head
    else:
        raise PintopicError(f"fine-tuning supports timm EfficientNet and ConvNeXt models, not {type(model).__name__}")
    if not 1 <= stages < len(blocks):
        raise PintopicError(f"--stages must be between 1 and {len(blocks) - 1} for this model, got {stages}")

    class Tail(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.Sequential(*blocks[-stages:])
            self.after = torch.nn.Sequential(*after)
            self.pooling = pooling  # what forward_head uses, registered so .to(device) moves it
            self._pool = model.forward_head

        def forward(self, x):
            return self._pool(self.after(self.blocks(x)), pre_logits=True)

    trunk = torch.nn.Sequential(*stem, *blocks[:-stages])
    return trunk.eval(), Tail()


# -- the trunk cache ----------------------------------------------------------------------------------

class AugmentedPreprocessor:
    """``path -> uint8 CHW`` with a random resized crop and flip, seeded by (seed, view, path): reproducible views."""

    def __init__(self, preprocessing, seed: int, view: int, scale=(0.35, 1.0)):
        self.preprocessing, self.seed, self.view, self.scale = preprocessing, seed, view, tuple(scale)
        self._transform = None

    def __getstate__(self):
        return {**self.__dict__, "_transform": None}

    def __call__(self, path):
        import random

        import torch
        from timm.data import create_transform

        from pintopic.imageio import load_rgb

        p = self.preprocessing
        if self._transform is None:
            self._transform = create_transform(
                input_size=p.input_size, is_training=True, use_prefetcher=True, scale=self.scale, hflip=0.5,
                color_jitter=None, auto_augment=None, interpolation=p.interpolation, mean=p.mean, std=p.std)
        image = load_rgb(path, draft_size=p.draft_size)
        state = zlib.crc32(f"{self.seed}:{self.view}:{path}".encode())
        random.seed(state)
        torch.manual_seed(state)
        return np.asarray(self._transform(image))


class TrunkRunner:
    """Frozen-trunk inference on uint8 pixels: ONNX Runtime on CPU when it exports, else PyTorch."""

    def __init__(self, trunk, preprocessing, *, device: str, runtime: str, export_path: Path):
        import torch

        from pintopic.features.preprocess import pixels_to_features

        self.network = pixels_to_features(trunk, preprocessing).eval()
        self.device, self.session, self.name = device, None, "torch"
        if device == "cpu" and runtime in ("auto", "onnx"):
            try:
                self.session = self._onnx_session(preprocessing, export_path)
                self.name = "onnxruntime"
            except Exception as error:  # noqa: BLE001 - auto falls back to PyTorch when a model does not export
                if runtime == "onnx":
                    raise PintopicError(f"ONNX export of the frozen trunk failed: {error}") from None
        if self.session is None:
            self.network = self.network.to(device)
            from pintopic.environment import usable_cores

            torch.set_num_threads(usable_cores())

    def _onnx_session(self, preprocessing, path: Path):
        from pintopic.features.runtime import export_onnx_graph, ort_sessions

        export_onnx_graph(self.network, preprocessing.input_size, path, output_name="maps")
        return ort_sessions(path)[0]

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        if self.session is not None:
            return self.session.run(None, {"input": np.ascontiguousarray(pixels, dtype=np.uint8)})[0]
        with torch.inference_mode():
            return self.network(torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)).float().cpu().numpy()


def _cache_trunk(folder: Path, tasks, trunk_runner, preprocessing, *, views: int, seed: int, batch_size: int,
                 workers: int, progress: bool) -> tuple[list[str], dict[str, dict]]:
    """Write ``cache/view-V-CCCCC.npy`` (float16 trunk maps) for each view and chunk of tasks; finished chunks are kept.

    Returns the ids that decoded and the failures ``{image_id: {status, reason}}``.
    """
    from pintopic.features.decoding import decoded_batches
    from pintopic.features.preprocess import ImagePreprocessor
    from pintopic.runio import read_json, write_json, write_npy

    chunks = [tasks[start:start + CACHE_CHUNK_ROWS] for start in range(0, len(tasks), CACHE_CHUNK_ROWS)]
    todo = [(view, c) for view in range(views) for c in range(len(chunks))
            if not (folder / f"view-{view}-{c:05d}.npy").exists() or not (folder / f"failed-{c:05d}.json").exists()]
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(chunks[c]) for _, c in todo), unit="img", desc="cache frozen trunk", dynamic_ncols=True)
    for view, c in todo:
        chunk = chunks[c]
        preprocessor = ImagePreprocessor(preprocessing) if view == 0 else AugmentedPreprocessor(preprocessing, seed, view)
        paths = [path for _, path in chunk]
        batches = [range(start, min(start + batch_size, len(paths))) for start in range(0, len(paths), batch_size)]
        maps: dict[int, np.ndarray] = {}
        failed: dict[str, dict] = {}
        for indices, arrays, failures in decoded_batches(paths, preprocessor, batches, workers):
            for index, status, detail in failures:
                failed[chunk[index][0]] = {"status": status, "reason": detail}
            if indices:
                for index, block in zip(indices, trunk_runner(arrays)):
                    maps[index] = block.astype(np.float16)
            if bar is not None:
                bar.update(len(indices) + len(failures))
        if view == 0:
            write_json(folder / f"failed-{c:05d}.json", failed)
        known_failed = read_json(folder / f"failed-{c:05d}.json")
        kept = [i for i, (image_id, _) in enumerate(chunk) if image_id not in known_failed]
        missing = [i for i in kept if i not in maps]
        if missing:  # a file that decoded for view 0 but not now: the source changed under us
            raise PintopicError(f"image {chunk[missing[0]][1]} no longer decodes; rerun ingest")
        write_npy(folder / f"view-{view}-{c:05d}.npy", np.stack([maps[i] for i in kept]) if kept else np.zeros((0,), np.float16))
    if bar is not None:
        bar.close()
    ids, failures = [], {}
    for c, chunk in enumerate(chunks):
        chunk_failed = read_json(folder / f"failed-{c:05d}.json")
        failures.update(chunk_failed)
        ids += [image_id for image_id, _ in chunk if image_id not in chunk_failed]
    return ids, failures


def _load_cache(folder: Path, n_chunks: int, views: int) -> np.ndarray:
    """All cached maps as one float16 array ``(views, n, C, H, W)``."""
    return np.stack([np.concatenate([a for a in (load_cache_chunk(folder / f"view-{view}-{c:05d}.npy") for c in range(n_chunks)) if a.ndim > 1])
                     for view in range(views)])


def load_cache_chunk(path: Path) -> np.ndarray:
    """One cached chunk, read only from a regular file; a damaged one is a one-line error naming the cache."""
    with open_regular(path, what="fine-tuning cache file") as handle:
        try:
            return np.load(handle, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise PintopicError(f"damaged fine-tuning cache file {path} ({one_line(error)}); delete {path.parent} "
                                "and rerun finetune") from None


# -- training -----------------------------------------------------------------------------------------

def augment_maps(maps, generator, min_scale: float = 0.6):
    """Feature-level augmentation: a random resized crop of each map (back to full size) and a random flip."""
    import torch
    import torch.nn.functional as F

    n, _, height, width = maps.shape
    out = torch.empty_like(maps)
    scales = torch.empty(n).uniform_(min_scale, 1.0, generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    for i in range(n):
        h = max(1, int(round(height * float(scales[i]) ** 0.5)))
        w = max(1, int(round(width * float(scales[i]) ** 0.5)))
        top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
        crop = maps[i:i + 1, :, top:top + h, left:left + w]
        if (h, w) != (height, width):
            crop = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)
        out[i] = crop[0].flip(-1) if flips[i] else crop[0]
    return out


def _flat_optimizer_state(optimizer) -> dict:
    import torch

    tensors = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors


def _restore_optimizer_state(optimizer, tensors: dict) -> None:
    state_dict = optimizer.state_dict()
    state: dict = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    state_dict["state"] = state
    optimizer.load_state_dict(state_dict)


def _save_tensors(path: Path, tensors: dict) -> None:
    from safetensors.torch import save_file

    from pintopic.runio import atomic_path

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))


def _predict(tail, head, maps: np.ndarray, device: str, batch_size: int) -> np.ndarray:
    import torch

    tail.eval()
    head.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(maps), batch_size):
            x = torch.from_numpy(maps[start:start + batch_size].astype(np.float32)).to(device)
            outputs.append(head(tail(x)).argmax(1).cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros(0, dtype=int)


def _check_settings(backbone: str, epochs: int, batch_size: int, views: int, patience: int, val_fraction: float,
                    lr: float) -> None:
    if backbone.startswith(PREFIX):
        raise PintopicError("fine-tune a base backbone (e.g. lite0), not an already fine-tuned one")
    if epochs < 1 or batch_size < 1 or views < 1 or patience < 1 or not 0 < val_fraction < 0.5 or lr <= 0:
        raise PintopicError("epochs, batch size, views and patience must be positive, lr > 0, val fraction in (0, 0.5)")


def _training_part(run_dir: Path, *, test_size: float | None, split: str | None, seed: int):
    """``(tasks [(image_id, path)], {image_id: category}, split settings)`` of the run's training part.

    The run's own split (the one evaluate scores on) is used whenever one exists, so a fine-tune never
    trains on images held out for testing; asking for other split settings then is an error.
    """
    from pintopic.dataset.manifest import image_file, load_sample
    from pintopic.dataset.split import training_split
    from pintopic.runio import run_paths

    sample = load_sample(run_dir)
    sample["image_id"] = sample["image_id"].astype(str)
    split_frame, split_info = training_split(run_paths(run_dir)["results"], sample, test_size=test_size, split=split,
                                             seed=seed)
    train_ids = set(split_frame.loc[split_frame["part"] == "train", "image_id"])
    train_rows = sample[sample["image_id"].isin(train_ids)].sort_values("image_id", kind="stable")
    tasks = [(str(row["image_id"]), image_file(row)) for _, row in train_rows.iterrows()]
    return tasks, dict(zip(train_rows["image_id"], train_rows["category"].astype(str))), split_info


def _cached_maps(folder: Path, base, tail_trunk, tasks, cache_settings: dict, *, views: int, seed: int, device: str,
                 runtime: str, workers: int | None, progress: bool):
    """The frozen trunk's outputs of every training image and view (computed once, kept in ``cache/``):
    ``(maps (views, n, C, H, W), ids that decoded, failures, seconds)``."""
    from pintopic.features.decoding import default_workers
    from pintopic.runio import settings_hash, stage_is_complete, write_json

    cache = folder / "cache"
    if not stage_is_complete(cache / "cache.json", cache_settings):
        for stale in cache.glob("*"):
            stale.unlink()
    cache.mkdir(parents=True, exist_ok=True)
    write_json(cache / "cache.json", {"settings": cache_settings, "settings_hash": settings_hash(cache_settings)})
    trunk_runner = TrunkRunner(tail_trunk, base.preprocessing, device=device, runtime=runtime,
                               export_path=cache / "trunk.onnx")
    started = time.perf_counter()
    ids, failures = _cache_trunk(cache, tasks, trunk_runner, base.preprocessing, views=views, seed=seed, batch_size=32,
                                 workers=default_workers() if workers is None else workers, progress=progress)
    seconds = time.perf_counter() - started
    del trunk_runner
    return _load_cache(cache, -(-len(tasks) // CACHE_CHUNK_ROWS), views), ids, failures, seconds


class _Training:
    """The trainable tail and head with their optimiser, schedule and loss; checkpointed after every epoch."""

    def __init__(self, tail, dim: int, n_classes: int, *, device: str, seed: int, lr: float, tail_lr_scale: float,
                 weight_decay: float, epochs: int, label_smoothing: float):
        import torch

        torch.manual_seed(seed)
        self.tail, self.device = tail, device
        self.head = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(dim, n_classes))
        tail.to(device)
        self.head.to(device)
        self.optimizer = torch.optim.AdamW([
            {"params": list(tail.parameters()), "lr": lr * tail_lr_scale},
            {"params": list(self.head.parameters()), "lr": lr}], weight_decay=weight_decay)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=epochs)
        self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.history, self.best_f1, self.best_epoch, self.next_epoch, self.resumed_from = [], -1.0, -1, 0, None

    def tensors(self) -> dict:
        return {**{f"tail.{k}": v for k, v in self.tail.state_dict().items()},
                **{f"head.{k}": v for k, v in self.head.state_dict().items()}}

    def load(self, tensors: dict) -> None:
        self.tail.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("tail.")})
        self.head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})

    def resume(self, folder: Path, settings: dict) -> None:
        """Continue from the last epoch's checkpoint when it was made with these settings; else start afresh."""
        from safetensors.torch import load_file

        from pintopic.runio import read_json, stage_is_complete

        if stage_is_complete(folder / CHECKPOINT_JSON, settings) and (folder / CHECKPOINT_FILE).exists():
            record = read_json(folder / CHECKPOINT_JSON)
            tensors = load_file(str(folder / CHECKPOINT_FILE))
            self.load(tensors)
            _restore_optimizer_state(self.optimizer, tensors)
            self.history, self.best_f1, self.best_epoch = record["history"], record["best_f1"], record["best_epoch"]
            self.next_epoch = self.resumed_from = record["epoch"] + 1
            self.schedule.load_state_dict(record["schedule"])
            for group, group_lr in zip(self.optimizer.param_groups, record["lrs"]):
                group["lr"] = group_lr
            return
        for stale in (folder / CHECKPOINT_JSON, folder / CHECKPOINT_FILE, folder / "best.safetensors"):
            stale.unlink(missing_ok=True)

    def epoch(self, epoch: int, maps, y, fit_rows, val_rows, *, seed: int, views: int, batch_size: int,
              progress: bool, epochs: int) -> float:
        """One epoch over the fitting rows (random view, feature-level augmentation); returns validation macro-F1."""
        import torch
        from sklearn.metrics import f1_score

        started = time.perf_counter()
        generator = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = fit_rows[torch.randperm(len(fit_rows), generator=generator).numpy()]
        view_of = torch.randint(0, views, (len(order),), generator=generator).numpy()
        self.tail.train()
        self.head.train()
        total_loss = 0.0
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(order), unit="img", desc=f"finetune epoch {epoch + 1}/{epochs}", dynamic_ncols=True,
                       leave=False)
        for start in range(0, len(order), batch_size):
            rows, batch_views = order[start:start + batch_size], view_of[start:start + batch_size]
            x = augment_maps(torch.from_numpy(maps[batch_views, rows].astype(np.float32)), generator).to(self.device)
            loss = self.loss_fn(self.head(self.tail(x)), torch.from_numpy(y[rows]).to(self.device))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total_loss += float(loss.detach()) * len(rows)
            if bar is not None:
                bar.update(len(rows))
        if bar is not None:
            bar.close()
        self.schedule.step()
        val_f1 = float(f1_score(y[val_rows], _predict(self.tail, self.head, maps[0, val_rows], self.device,
                                                      batch_size * 2), average="macro"))
        self.history.append({"epoch": epoch + 1, "train_loss": round(total_loss / len(order), 5),
                             "val_f1_macro": round(val_f1, 5), "seconds": round(time.perf_counter() - started, 2)})
        if progress:
            print(f"epoch {epoch + 1}/{epochs}: loss {self.history[-1]['train_loss']:.4f}, validation macro-F1 "
                  f"{val_f1:.4f}", flush=True)
        return val_f1

    def checkpoint(self, folder: Path, epoch: int, val_f1: float, settings: dict) -> None:
        """Keep the best epoch's weights, and everything needed to resume after this one (atomically)."""
        from pintopic.runio import settings_hash, write_json

        tensors = self.tensors()
        if val_f1 > self.best_f1:
            self.best_f1, self.best_epoch = val_f1, epoch
            _save_tensors(folder / "best.safetensors", tensors)
        _save_tensors(folder / CHECKPOINT_FILE, {**tensors, **_flat_optimizer_state(self.optimizer)})
        write_json(folder / CHECKPOINT_JSON, {
            "epoch": epoch, "history": self.history, "best_f1": self.best_f1, "best_epoch": self.best_epoch,
            "schedule": self.schedule.state_dict(), "lrs": [g["lr"] for g in self.optimizer.param_groups],
            "settings": settings, "settings_hash": settings_hash(settings)})

    def run(self, folder: Path, settings: dict, maps, y, fit_rows, val_rows, *, epochs: int, patience: int,
            **epoch_settings) -> None:
        """Train until ``epochs`` or ``patience`` epochs without improvement, then load the best epoch's weights."""
        from safetensors.torch import load_file

        start = self.next_epoch
        stop = start > 0 and (start >= epochs or start - 1 - self.best_epoch >= patience)
        for epoch in range(start, epochs if not stop else start):
            val_f1 = self.epoch(epoch, maps, y, fit_rows, val_rows, epochs=epochs, **epoch_settings)
            self.checkpoint(folder, epoch, val_f1, settings)
            if epoch - self.best_epoch >= patience:
                break
        self.load(load_file(str(folder / "best.safetensors")))


def _validation_rows(ids: list[str], label_of: dict, val_fraction: float, seed: int):
    """``(categories, y, fitting rows, validation rows)``: a stratified validation fold carved from the training part."""
    from sklearn.model_selection import train_test_split

    categories = sorted({label_of[i] for i in ids})
    y = np.array([categories.index(label_of[i]) for i in ids])
    if len(categories) < 2 or np.bincount(y).min() < 2:
        raise PintopicError("fine-tuning needs at least 2 categories with 2 decodable training images each")
    fit_rows, val_rows = train_test_split(np.arange(len(ids)), test_size=val_fraction, stratify=y, random_state=seed)
    return categories, y, np.sort(fit_rows), np.sort(val_rows)


def finetune(run_dir: str | os.PathLike, *, backbone: str = "lite0", stages: int = 1, epochs: int = 8,
             batch_size: int = 64, lr: float = 1e-3, tail_lr_scale: float = 0.1, weight_decay: float = 1e-4,
             patience: int = 2, views: int = 2, val_fraction: float = 0.15, label_smoothing: float = 0.1,
             device: str = "auto", runtime: str = "auto", seed: int = 0, name: str | None = None,
             test_size: float | None = None, split: str | None = None, workers: int | None = None,
             progress: bool = True) -> Path:
    """Fine-tune the last ``stages`` stages of ``backbone`` on the run's training part; returns ``RUN/finetune/<name>/``.

    The training part is that of the run's split (``results/split.parquet``) when one exists; ``split`` and
    ``test_size`` only make one (default stratified, 0.2) where there is none. The folder's ``finetune.json``
    (written last) marks it finished; a rerun with the same settings is a no-op, and a killed run resumes
    from its trunk cache and last epoch checkpoint.
    """
    import pyarrow as pa

    from pintopic.environment import library_versions, machine
    from pintopic.features.builder import build_backbone
    from pintopic.features.registry import slug
    from pintopic.features.runtime import resolve_device
    from pintopic.runio import RunLock, run_paths, settings_hash, stage_is_complete, write_json, write_parquet

    run_dir = Path(run_dir)
    _check_settings(backbone, epochs, batch_size, views, patience, val_fraction, lr)
    name = name or f"{slug(backbone)}-s{stages}"
    if slug(name) != name:
        raise PintopicError(f"--out must be a plain folder name (letters, digits, ._-), got {name!r}")
    if not (run_paths(run_dir)["dataset"] / "sample.parquet").exists():
        raise PintopicError(f"{run_paths(run_dir)['dataset']} has no sample.parquet; run `pintopic ingest SOURCE {run_dir}` first")
    folder = finetune_root(run_dir) / name
    device = resolve_device(device)
    started = time.perf_counter()
    with RunLock(run_dir):
        tasks, label_of, split_info = _training_part(run_dir, test_size=test_size, split=split, seed=seed)
        base = build_backbone(backbone, pretrained=True)
        cache_settings = {"backbone": base.describe(), "stages": stages, "views": views, "seed": seed,
                          "preprocessing": base.preprocessing.to_dict(), "split": settings_hash(split_info),
                          "ids": settings_hash(sorted(label_of))}
        settings = {**cache_settings, "training_version": TRAINING_VERSION, "epochs": epochs, "batch_size": batch_size,
                    "lr": lr, "tail_lr_scale": tail_lr_scale, "weight_decay": weight_decay, "patience": patience,
                    "val_fraction": val_fraction, "label_smoothing": label_smoothing}
        if stage_is_complete(folder / FINETUNE_JSON, settings) and (folder / MODEL_FILE).exists():
            return folder
        (folder / FINETUNE_JSON).unlink(missing_ok=True)
        trunk, tail = split_model(base.model, stages)
        maps, ids, failures, cache_seconds = _cached_maps(folder, base, trunk, tasks, cache_settings, views=views,
                                                          seed=seed, device=device, runtime=runtime, workers=workers,
                                                          progress=progress)
        categories, y, fit_rows, val_rows = _validation_rows(ids, label_of, val_fraction, seed)
        training = _Training(tail, base.dim, len(categories), device=device, seed=seed, lr=lr,
                             tail_lr_scale=tail_lr_scale, weight_decay=weight_decay, epochs=epochs,
                             label_smoothing=label_smoothing)
        training.resume(folder, settings)
        training.run(folder, settings, maps, y, fit_rows, val_rows, epochs=epochs, patience=patience, seed=seed,
                     views=views, batch_size=batch_size, progress=progress)
        base.model.cpu().eval()
        _save_tensors(folder / MODEL_FILE, base.model.state_dict())
        _save_tensors(folder / HEAD_FILE, dict(training.head.state_dict()))
        write_parquet(folder / "validation.parquet", pa.table({"image_id": pa.array([ids[i] for i in val_rows], pa.string())}))
        write_json(folder / FINETUNE_JSON, {
            "format": "pintopic-finetune", "base": base.spec.name, "base_model": base.spec.model,
            "base_weights_sha256": base.weights_sha256, "base_weights_source": base.weights_source,
            "preprocessing": {k: v for k, v in base.preprocessing.to_dict().items() if k not in ("draft_size", "decoder")},
            "dim": base.dim, "stages": stages, "trainable_parameters": sum(p.numel() for p in tail.parameters()),
            "categories": categories, "n_train": len(fit_rows), "n_validation": len(val_rows), "failed": failures,
            "best_epoch": training.best_epoch + 1, "best_val_f1_macro": training.best_f1, "history": training.history,
            "resumed_from_epoch": training.resumed_from, "device": device, "trunk_cache_seconds": round(cache_seconds, 2),
            "seconds_this_invocation": round(time.perf_counter() - started, 2),
            "weights": MODEL_FILE, "head": HEAD_FILE, "spec": PREFIX + str(folder.resolve()),
            "versions": library_versions(), "machine": machine(),
            "settings": settings, "settings_hash": settings_hash(settings),
        })
    return folder
