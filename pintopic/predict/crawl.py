"""``pintopic predict MODEL_DIR SOURCE --out predictions.parquet``: top-k categories for every image of a source.

The source (a crawl, a folders dataset or a table, of any size) is scanned as ingest scans it
(:mod:`pintopic.dataset.layouts`: the same ``image_id`` for the same file) and cut into shards of
``shard_rows`` images in ``image_id`` order. On the engine (:mod:`pintopic.engine`: this machine or a Ray
cluster), each image is decoded once for every backbone the model needs
(:class:`~pintopic.features.steps.DecodeStep`), then embedded and scored in the workers by the model
folder's :class:`~pintopic.predict.predictor.Predictor` (:class:`ScoreStep`), so the classifier scales
with the cluster and a row equals ``pintopic predict`` on the same file. Each finished shard is written
as ``OUT.parts/part-NNNNN.parquet``; a killed run keeps them and the rerun computes only the others.
When every shard is there they are merged, one at a time, into OUT (atomically; its metadata records
the model, source and settings) and the parts folder is removed; a rerun with the same inputs is then
a no-op. The parts folder is locked (:class:`~pintopic.runio.RunLock`): a second driver is refused.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from pintopic.errors import PintopicError
from pintopic.runio import (
    RunLock,
    atomic_path,
    canonical_json,
    read_json,
    settings_hash,
    write_json,
    write_parquet,
)
from pintopic.safeio import require_regular

DEFAULT_SHARD_ROWS = 4096
#: Key of the JSON record in the output file's Parquet metadata.
METADATA_KEY = b"pintopic"
#: Listing statuses that leave nothing to decode.
NOT_DECODED = ("outside_root", "missing_image")


def prediction_schema():
    """One row per image: where it is, its status, the best category and score, the top-k lists."""
    import pyarrow as pa

    return pa.schema([
        ("image_id", pa.string()), ("path", pa.string()), ("user", pa.string()), ("board", pa.string()),
        ("pin", pa.string()), ("status", pa.string()), ("reason", pa.string()), ("category", pa.string()),
        ("score", pa.float64()), ("top_categories", pa.list_(pa.string())), ("top_scores", pa.list_(pa.float64())),
    ])


def backbone_components(predictor) -> list[tuple[str, list[str], dict]]:
    """``(backbone key, component names, settings)`` per distinct backbone of the model; a fusion ``a+b`` has
    several components, embedded alone and joined as :func:`~pintopic.features.embed.embed_fused` joins them."""
    from pintopic.features.registry import fusion_components

    return [(key, fusion_components(backbone["spec"]) or [backbone["spec"]],
             {"pretrained": bool(backbone.get("pretrained", True)), "tta": backbone.get("tta")})
            for key, backbone in predictor.backbones.items()]


class ComponentsDecodeStep:
    """:class:`~pintopic.features.steps.DecodeStep` for backbone names, their preprocessing resolved in the worker
    (the driver never builds a model)."""

    def __init__(self, names: list[str]):
        self.names = names
        self._step = None

    def __getstate__(self):
        return {"names": self.names, "_step": None}

    def __call__(self, batch: dict) -> dict:
        if self._step is None:
            from pintopic.features.pixel_cache import backbone_preprocessing
            from pintopic.features.steps import DecodeStep

            self._step = DecodeStep([backbone_preprocessing(name) for name in self.names])
        return self._step(batch)


class ScoreStep:
    """Built once per worker: the model folder's predictor and a runner per backbone component; decoded rows (every
    component's input side by side) -> ``top_classes`` (k positions in the predictor's classes, best first; -1 for
    none) and ``top_scores`` (NaN for none)."""

    def __init__(self, model_dir: str, top_k: int):
        from pintopic.features.embed import prepared_backbone
        from pintopic.predict.predictor import Predictor, component_quantizations

        self.predictor, self.top_k = Predictor.load(model_dir), top_k
        graphs = {key: component_quantizations(backbone) for key, backbone in self.predictor.backbones.items()}
        self.units = [(key, [prepared_backbone(name, **settings, quantization=graph) for name, graph in zip(names, graphs[key])])
                      for key, names, settings in backbone_components(self.predictor)]

    def features(self, pixels: np.ndarray, ok: np.ndarray) -> dict[str, np.ndarray]:
        """``{backbone key: X}`` of the ok rows, each component's input taken in turn from ``pixels``."""
        from pintopic.features.fusion import fused_blocks
        from pintopic.features.steps import embed_rows

        features, offset = {}, 0
        for key, components in self.units:
            blocks = []
            for backbone, runner in components:
                width = int(np.prod(backbone.preprocessing.input_size))
                blocks.append(embed_rows(runner, backbone.preprocessing.input_size, pixels[:, offset:offset + width],
                                         ok, backbone.dim)[ok])
                offset += width
            features[key] = blocks[0] if len(blocks) == 1 else fused_blocks(blocks)
        return features

    def __call__(self, batch: dict) -> dict:
        ok = batch["status"] == "ok"
        classes = np.full((len(ok), self.top_k), -1, dtype=np.int64)
        scores = np.full((len(ok), self.top_k), np.nan)
        if ok.any():
            position = {str(name): index for index, name in enumerate(self.predictor.classes)}
            values, _ = self.predictor.scores(self.features(batch["pixels"], ok))
            for row, top in zip(np.flatnonzero(ok), self.predictor.top(values, self.top_k)):
                classes[row, :len(top)] = [position[entry["category"]] for entry in top]
                scores[row, :len(top)] = [entry["score"] for entry in top]
        return {"status": batch["status"], "detail": batch["detail"], "top_classes": classes, "top_scores": scores}


def _part(parts: Path, index: int) -> Path:
    return parts / f"part-{index:05d}.parquet"


def _finished(path: Path, rows: int) -> bool:
    import pyarrow.parquet as pq

    try:  # a part that is not a regular file (never opened: a pipe would block) is computed again
        return path.exists() and (require_regular(path) or pq.read_metadata(path).num_rows == rows)
    except (OSError, ValueError):
        return False


def _shard_table(entries, outputs: dict[str, dict], classes):
    """A shard's rows in image_id order: the engine's output for decoded images, the listing's status for the rest."""
    import pyarrow as pa

    columns: dict[str, list] = {name: [] for name in prediction_schema().names}
    for entry in entries:
        output = outputs.get(entry.image_id)
        status = str(output["status"]) if output else (entry.status or "missing_image")
        top = [(str(classes[c]), float(score)) for c, score in zip(output["top_classes"], output["top_scores"]) if c >= 0] \
            if status == "ok" else []
        reason = "" if status == "ok" else str(output["detail"]) if output else entry.detail
        for name, value in (("image_id", entry.image_id), ("path", entry.path), ("user", entry.user),
                            ("board", entry.board), ("pin", entry.pin), ("status", status), ("reason", reason),
                            ("category", top[0][0] if top else None), ("score", top[0][1] if top else None),
                            ("top_categories", [c for c, _ in top] if top else None),
                            ("top_scores", [s for _, s in top] if top else None)):
            columns[name].append(value)
    return pa.table(columns, schema=prediction_schema())


def _rows(entries) -> dict:
    return {"image_id": np.array([e.image_id for e in entries], dtype=object),
            "path": np.array([bytes(e.abspath) for e in entries], dtype=object)}


def _complete_record(out: Path) -> dict | None:
    """The record in a finished output file's metadata, or None."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(out).metadata or {}
        return json.loads(metadata[METADATA_KEY])
    except (OSError, ValueError, KeyError):
        return None


def _merge(parts: Path, count: int, out: Path, record: dict) -> None:
    """Every part, one at a time, into ``out`` (atomically), with ``record`` in its metadata."""
    import pyarrow.parquet as pq

    schema = prediction_schema().with_metadata({METADATA_KEY: canonical_json(record).encode()})
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for index in range(count):
            writer.write_table(pq.read_table(_part(parts, index)).cast(schema))


def _open_parts(parts: Path, plan: dict) -> None:
    """Keep the finished parts of the same plan; anything else in the folder is stale and removed."""
    plan_file = parts / "plan.json"
    try:
        same = read_json(plan_file) == plan
    except (OSError, ValueError):
        same = False
    if not same:
        for stale in parts.glob("part-*.parquet"):
            stale.unlink()
        write_json(plan_file, plan)


def predict_crawl(model_dir: str | os.PathLike, source: str | os.PathLike, out: str | os.PathLike, *,
                  layout: str = "auto", top_k: int = 3, batch_size: int = 32, shard_rows: int = DEFAULT_SHARD_ROWS,
                  engine=None, workers: int | None = None, progress: bool = True) -> dict:
    """Write ``out`` (Parquet, one row per image of ``source``; see the module docstring); returns its record.

    ``engine`` (:class:`~pintopic.engine.EngineSettings`; default: this machine, ``workers`` decoding processes).
    """
    from pintopic import __version__
    from pintopic.dataset.layouts import LAYOUTS, detect_layout, display, scan
    from pintopic.predict.predictor import Predictor

    if layout not in ("auto",) + LAYOUTS:
        raise PintopicError(f"unknown layout {layout!r}; use one of auto, {', '.join(LAYOUTS)}")
    if top_k < 1 or batch_size < 1 or shard_rows < 1:
        raise PintopicError("--top-k, the batch size and the shard rows must be at least 1")
    source_path, out = Path(os.path.abspath(os.path.expanduser(os.fsdecode(source)))), Path(out)
    if not source_path.exists():
        raise PintopicError(f"source {source_path} does not exist")
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise PintopicError(f"--out {out}: give a .parquet file name")
    if out.exists() or out.is_symlink():
        require_regular(out, "--out")  # never read a pipe or a folder as an earlier output
    predictor = Predictor.load(model_dir)
    resolved = detect_layout(source_path) if layout == "auto" else layout
    started = time.perf_counter()
    parts = out.with_name(out.name + ".parts")
    listing = scan(source_path, resolved, skip_folders=[parts])  # parts inside the source never become input
    plan = {"version": __version__, "model": {"folder": str(Path(model_dir).resolve()), "info": settings_hash(predictor.info, 16)},
            "source": display(os.fsencode(source_path)), "layout": resolved, "listing": listing.fingerprint(),
            "top_k": int(top_k), "shard_rows": int(shard_rows)}
    previous = _complete_record(out) if out.exists() else None
    if previous and previous.get("plan") == plan:
        print(f"predict: {out} is up to date (same model, source listing and settings); nothing computed", file=sys.stdout)
        return previous
    parts.mkdir(parents=True, exist_ok=True)
    with RunLock(parts):
        _open_parts(parts, plan)
        entries = sorted(listing.entries, key=lambda entry: entry.image_id)
        del listing
        work = _predict_shards(predictor, model_dir, entries, parts, top_k=top_k, batch_size=batch_size,
                               shard_rows=shard_rows, engine=engine, workers=workers, progress=progress)
        by_status: dict[str, int] = {}
        for entry_status in work.pop("statuses"):
            by_status[entry_status] = by_status.get(entry_status, 0) + 1
        record = {"tool": "pintopic", "plan": plan, "images": len(entries), "by_status": dict(sorted(by_status.items())),
                  **work, "seconds": round(time.perf_counter() - started, 3)}
        _merge(parts, work["shards"], out, record)
    shutil.rmtree(parts, ignore_errors=True)
    print(f"predict: {out}: {len(entries):,} images, " + ", ".join(f"{k} {v:,}" for k, v in record["by_status"].items()))
    return record


def _predict_shards(predictor, model_dir, entries, parts: Path, *, top_k: int, batch_size: int, shard_rows: int,
                    engine, workers: int | None, progress: bool) -> dict:
    """Write every missing part; return the statuses of all rows and what computed them."""
    import pyarrow.parquet as pq

    from pintopic.engine.factory import open_engine
    from pintopic.engine.interface import Step
    from pintopic.features.decoding import default_workers

    workers = default_workers() if workers is None else workers
    shards = [entries[start:start + shard_rows] for start in range(0, len(entries), shard_rows)] or [[]]
    todo = [i for i, shard in enumerate(shards) if not _finished(_part(parts, i), len(shard))]
    plan: list[tuple[int, list]] = []
    for i in todo:
        decodable = [e for e in shards[i] if e.decode and e.status not in NOT_DECODED]
        plan.extend((i, decodable[start:start + batch_size]) for start in range(0, len(decodable), batch_size))
    pending = {i: sum(1 for owner, _ in plan if owner == i) for i in todo}
    outputs: dict[int, dict] = {i: {} for i in todo}
    for i in todo:
        if not pending[i]:
            write_parquet(_part(parts, i), _shard_table(shards[i], {}, predictor.classes))
    names = [name for _, components, _ in backbone_components(predictor) for name in components]
    runner = open_engine(engine) if plan else None
    bar = None
    if progress and plan:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(batch) for _, batch in plan), unit="img", desc="predict", dynamic_ncols=True,
                   file=sys.stderr)
    started = time.perf_counter()
    steps = (Step(ComponentsDecodeStep(names), task_rows=4 * batch_size),
             Step(ScoreStep, (str(model_dir), int(top_k)), stateful=True))
    for index, output in runner.run([_rows(batch) for _, batch in plan], *steps, workers=workers) if runner else ():
        i, batch = plan[index]
        for row, entry in enumerate(batch):
            outputs[i][entry.image_id] = {name: column[row] for name, column in output.items()}
        if bar is not None:
            bar.update(len(batch))
        pending[i] -= 1
        if not pending[i]:
            write_parquet(_part(parts, i), _shard_table(shards[i], outputs.pop(i), predictor.classes))
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    statuses = [status for i in range(len(shards))
                for status in pq.read_table(_part(parts, i), columns=["status"]).column("status").to_pylist()]
    computed = sum(len(batch) for _, batch in plan)
    return {"statuses": statuses, "shards": len(shards), "images_computed": computed,
            "images_per_second": round(computed / seconds, 2) if computed and seconds else None,
            "engine": runner.describe() if runner is not None else None}
