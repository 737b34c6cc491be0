"""``pintopic ingest``: scan a collection, decode-verify every image, clean, sample, write ``RUN/dataset/``.

Reruns are cheap. ``dataset.json`` records a fingerprint of the source listing (relative paths,
sizes, mtimes, labels), the settings and a SHA-256 of every output:

* same listing and settings, outputs intact: nothing is decoded and no file is written;
* other sampling or exclusion settings: the decode results cached in ``manifest.parquet`` are reused
  (nothing is decoded) and only the changed outputs are rewritten;
* a changed source: only files whose path, size or mtime changed are decoded again.

Outputs are deterministic (rows sorted by ``image_id``, no timestamps), so the same source and
settings give byte-identical ``manifest.parquet`` and ``sample.parquet`` in any run folder.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from pintopic import __version__
from pintopic.categories import normalize_category, read_category_map
from pintopic.dataset.cleaning import assign_statuses, cached_decode
from pintopic.dataset.decode_cache import CACHE_FOLDER, CACHE_SIDE, cache_summary
from pintopic.dataset.distribution import distribution_csv, distribution_png
from pintopic.dataset.layouts import LAYOUTS, Listing, detect_layout, display, scan
from pintopic.dataset.manifest import manifest_schema
from pintopic.dataset.sampling import select_sample
from pintopic.dataset.verify import Verified, verify_files
from pintopic.engine.factory import open_engine
from pintopic.environment import usable_cores
from pintopic.errors import PintopicError
from pintopic.imageio import DEFAULT_MAX_PIXELS, STATUSES
from pintopic.runio import (
    RunLock,
    canonical_json,
    read_json,
    settings_hash,
    write_if_changed,
    write_parquet,
)
from pintopic.safeio import MAX_METADATA_BYTES, read_regular

OUTPUTS = ("manifest.parquet", "sample.parquet", "distribution.csv", "distribution.png")


def _sorted_table(columns: dict[str, list]):
    """The manifest as an Arrow table, rows sorted by ``image_id``."""
    import pyarrow as pa

    table = pa.table(columns, schema=manifest_schema())
    return table.take(sorted(range(table.num_rows), key=columns["image_id"].__getitem__))


def _parquet_bytes(table) -> bytes:
    with tempfile.TemporaryDirectory(prefix="pintopic-") as folder:
        path = Path(folder) / "table.parquet"
        write_parquet(path, table)
        return path.read_bytes()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _normalise_exclude(exclude) -> list[str]:
    if exclude is None:
        return []
    if isinstance(exclude, str):
        exclude = exclude.split(",")
    names = {normalize_category(str(item)) for item in exclude}
    return sorted(name for name in names if name)


def _check_settings(layout, per_category, min_per_category, seed, max_pixels, workers, max_metadata_bytes):
    if layout not in ("auto",) + LAYOUTS:
        raise PintopicError(f"unknown layout {layout!r}; use one of auto, {', '.join(LAYOUTS)}")
    if per_category is not None and int(per_category) < 1:
        raise PintopicError("--per-category must be at least 1 (leave it out to keep every ok image)")
    if int(min_per_category) < 0:
        raise PintopicError("--min-per-category cannot be negative")
    if max_pixels is not None and int(max_pixels) < 1:
        raise PintopicError("--max-pixels must be at least 1")
    if workers is not None and int(workers) < 1:
        raise PintopicError("--workers must be at least 1")
    if int(max_metadata_bytes) < 1:
        raise PintopicError("--max-metadata-bytes must be at least 1")
    try:
        int(seed)
    except (TypeError, ValueError):
        raise PintopicError(f"--seed must be an integer, not {seed!r}") from None


def ingest(source, run_dir, *, layout: str = "auto", exclude: Iterable[str] | str | None = ("none", "other"),
           per_category: int | None = None, min_per_category: int = 5, seed: int = 0, max_pixels: int | None = None,
           workers: int | None = None, progress: bool = True, decode_cache: bool = True,
           categories: str | os.PathLike | None = None, max_metadata_bytes: int = MAX_METADATA_BYTES,
           engine=None) -> dict:
    """Scan ``source``, verify every image, clean, sample; write ``run_dir/dataset/``; return dataset.json's content.

    ``categories`` is a CSV mapping boards to categories (``categories.read_category_map``), for crawl and
    gallery-dl boards that carry no category of their own. ``decode_cache`` keeps small decoded copies of
    costly files for extraction (:mod:`pintopic.dataset.decode_cache`). Metadata files over
    ``max_metadata_bytes`` are ``bad_metadata``. A run folder inside the source is not scanned (its outputs
    never become input). ``engine`` (:class:`~pintopic.engine.EngineSettings`; default: this machine) runs
    the decode-verify; it does not change any output, so a run ingested on a cluster is up to date for a
    single machine and back.
    """
    _check_settings(layout, per_category, min_per_category, seed, max_pixels, workers, max_metadata_bytes)
    source_path = Path(os.path.abspath(os.path.expanduser(os.fsdecode(source))))
    if not source_path.exists():
        raise PintopicError(f"source {source_path} does not exist")
    resolved_layout = detect_layout(source_path) if layout == "auto" else layout
    category_map = read_category_map(categories) if categories else None
    arguments = {
        "source": display(os.fsencode(source_path)), "layout": layout, "exclude": _normalise_exclude(exclude),
        "per_category": None if per_category is None else int(per_category),
        "min_per_category": int(min_per_category), "seed": int(seed),
        "max_pixels": DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels),
        "decode_cache_side": CACHE_SIDE if decode_cache else None,
    }
    if category_map is not None:  # only when given, so runs without a map keep their settings hash
        arguments["categories"] = display(os.fsencode(os.path.abspath(categories)))
    if int(max_metadata_bytes) != MAX_METADATA_BYTES:  # likewise
        arguments["max_metadata_bytes"] = int(max_metadata_bytes)
    run = Path(run_dir)
    dataset_dir = run / "dataset"
    with RunLock(run):
        started = time.perf_counter()
        listing = scan(source_path, resolved_layout, category_map, skip_folders=[run],
                       max_metadata_bytes=int(max_metadata_bytes))
        fingerprint = listing.fingerprint()
        key = {"version": __version__, "arguments": arguments, "layout": resolved_layout, "listing": fingerprint}
        stage_hash = settings_hash(key, length=16)
        previous = _read_previous(dataset_dir)
        if previous and previous.get("settings_hash") == stage_hash and _outputs_intact(dataset_dir, previous):
            _print_summary(previous, listing, None, up_to_date=True)
            record = previous
        else:
            record = _build(listing, arguments, resolved_layout, fingerprint, stage_hash, dataset_dir, previous,
                            workers, progress, started, engine)
        return record


def _read_previous(dataset_dir: Path) -> dict | None:
    path = dataset_dir / "dataset.json"
    if not path.exists():
        return None
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _outputs_intact(dataset_dir: Path, record: dict) -> bool:
    hashes = record.get("outputs") or {}
    for name in OUTPUTS:
        try:
            if name not in hashes or _sha256(read_regular(dataset_dir / name)) != hashes[name]:
                return False
        except (OSError, ValueError):
            return False
    return True


def _load_cache(dataset_dir: Path, previous: dict | None) -> tuple[dict, int | None]:
    """{image_id: (file_size, mtime_ns, Verified)} from the previous manifest, when it matches its record."""
    path = dataset_dir / "manifest.parquet"
    if not previous or not path.exists():
        return {}, None
    try:
        if _sha256(read_regular(path)) != (previous.get("outputs") or {}).get("manifest.parquet"):
            return {}, None
        import pyarrow.parquet as pq

        columns = ["image_id", "status", "reason_detail", "sha256", "width", "height", "file_size", "mtime_ns"]
        table = pq.read_table(path, columns=columns)
        values = [table.column(name).to_pylist() for name in columns]
    except Exception:  # a damaged or foreign manifest: decode everything again
        return {}, None
    del table
    cache = {}
    for fields in zip(*values):
        row = dict(zip(columns, fields))
        verified = cached_decode(row)
        if verified is not None and row["file_size"] is not None:
            cache[row["image_id"]] = (row["file_size"], row["mtime_ns"], verified)
    return cache, (previous.get("arguments") or {}).get("max_pixels")


def _reusable(verified: Verified, previous_max: int | None, max_pixels: int) -> bool:
    if previous_max == max_pixels:
        return True
    if verified.status == "ok":
        return verified.width is not None and verified.width * verified.height <= max_pixels
    return verified.status in ("empty", "not_an_image", "unsupported")


def _decode(listing: Listing, arguments: dict, dataset_dir: Path, previous: dict | None, workers: int | None,
            progress: bool, engine=None) -> tuple[list[Verified | None], dict]:
    """Decode-verify (on ``engine``) every file the previous manifest cannot answer for; ``(results per entry, timing)``."""
    max_pixels = arguments["max_pixels"]
    entries = listing.entries
    cache, previous_max = _load_cache(dataset_dir, previous)
    decoded: list[Verified | None] = [None] * len(entries)
    todo: list[int] = []
    for index, entry in enumerate(entries):
        if not entry.decode or entry.status in ("outside_root", "missing_image"):
            continue
        hit = cache.get(entry.image_id)
        if hit and hit[0] == entry.size and hit[1] == entry.mtime_ns and _reusable(hit[2], previous_max, max_pixels):
            decoded[index] = hit[2]
        else:
            todo.append(index)
    workers = usable_cores() if workers is None else int(workers)
    started = time.perf_counter()
    cache_dir = dataset_dir / CACHE_FOLDER if arguments["decode_cache_side"] else None
    runner = open_engine(engine) if todo else None
    results = verify_files([entries[i].abspath for i in todo], max_pixels=max_pixels, workers=workers,
                           sizes=[entries[i].size for i in todo], progress=progress, cache_dir=cache_dir, engine=runner)
    for index, result in zip(todo, results):
        decoded[index] = result
    timing = {"decoded": len(todo), "reused": sum(1 for item in decoded if item is not None) - len(todo),
              "decode_seconds": time.perf_counter() - started, "workers": workers,
              "engine": runner.describe() if runner is not None else None}
    return decoded, timing


def _counts(statuses: list[str], categories: list[str | None], exclude) -> tuple[dict, dict, dict]:
    """``(files by status, files found by category, ok files by category)``; excluded categories are not counted."""
    by_status = dict.fromkeys(STATUSES, 0)
    found_by_category: dict[str, int] = {}
    ok_by_category: dict[str, int] = {}
    for status, category in zip(statuses, categories):
        by_status[status] = by_status.get(status, 0) + 1
        if category is not None and category not in exclude:
            found_by_category[category] = found_by_category.get(category, 0) + 1
            ok_by_category.setdefault(category, 0)
            if status == "ok":
                ok_by_category[category] += 1
    return by_status, found_by_category, ok_by_category


def _build(listing: Listing, arguments: dict, layout: str, fingerprint: str, stage_hash: str, dataset_dir: Path,
           previous: dict | None, workers: int | None, progress: bool, started: float, engine=None) -> dict:
    import pyarrow as pa

    decoded, timing = _decode(listing, arguments, dataset_dir, previous, workers, progress, engine)
    manifest = _sorted_table(assign_statuses(listing.entries, decoded, arguments["exclude"]))
    del decoded
    ids, categories, statuses = (manifest.column(name).to_pylist() for name in ("image_id", "category", "status"))
    selected, left_out, sampled = select_sample(
        ((image_id, category) for image_id, category, status in zip(ids, categories, statuses) if status == "ok"),
        per_category=arguments["per_category"], min_per_category=arguments["min_per_category"], seed=arguments["seed"],
    )
    chosen = set(selected)
    sample = manifest.filter(pa.array([image_id in chosen for image_id in ids]))
    by_status, found_by_category, ok_by_category = _counts(statuses, categories, arguments["exclude"])
    distribution = [{"category": c, "count": ok_by_category[c], "found": found_by_category[c], "sampled": sampled.get(c, 0)}
                    for c in ok_by_category]
    outputs = {
        "manifest.parquet": _parquet_bytes(manifest),
        "sample.parquet": _parquet_bytes(sample),
        "distribution.csv": distribution_csv(distribution),
        "distribution.png": distribution_png(ok_by_category, left_out=[row["category"] for row in distribution if not row["sampled"]],
                                             min_per_category=arguments["min_per_category"]),
    }
    dataset_dir.mkdir(parents=True, exist_ok=True)
    for name, data in outputs.items():
        write_if_changed(dataset_dir / name, data)
    record = {
        "tool": "pintopic", "version": __version__, "arguments": arguments, "layout": layout, "seed": arguments["seed"],
        "listing_fingerprint": fingerprint, "settings_hash": stage_hash,
        "counts": {
            "found": manifest.num_rows, "ok": by_status["ok"], "sampled": sample.num_rows, "by_status": by_status,
            "by_category": dict(sorted(ok_by_category.items())),
            "found_by_category": dict(sorted(found_by_category.items())),
            "sample_by_category": dict(sorted(sampled.items())),
            "ignored_dirs": len(listing.ignored_dirs), "ignored_files": listing.ignored_files,
        },
        "sample": {
            "rows": sample.num_rows, "categories": sorted(sampled), "left_out": dict(sorted(left_out.items())),
            "per_category": arguments["per_category"], "min_per_category": arguments["min_per_category"],
        },
        "ignored_dirs": sorted(listing.ignored_dirs)[:100],
        "notes": listing.notes[:100],
        "outputs": {name: _sha256(data) for name, data in outputs.items()},
    }
    if arguments["decode_cache_side"]:
        cache_dir = dataset_dir / CACHE_FOLDER
        record["decode_cache"] = {"folder": CACHE_FOLDER, "side": arguments["decode_cache_side"], "format": "png",
                                  "rule": "no JPEG; other files with alpha or a palette, or with shorter side >= 2 x side (box-reduced)",
                                  **cache_summary(cache_dir)}
    write_if_changed(dataset_dir / "dataset.json", canonical_json(record).encode("utf-8"))
    _print_summary(record, listing, {**timing, "seconds": time.perf_counter() - started}, up_to_date=False)
    return record


def _print_summary(record: dict, listing: Listing, timing: dict | None, *, up_to_date: bool) -> None:
    counts = record["counts"]
    arguments = record["arguments"]
    out = sys.stdout
    if up_to_date:
        print("ingest: dataset is up to date (same source listing and settings); nothing decoded or written", file=out)
    print(f"ingest: {arguments['source']} ({record['layout']} layout): {counts['found']:,} files found, "
          f"{counts['ok']:,} ok", file=out)
    parts = [f"{status} {count:,}" for status, count in counts["by_status"].items() if count]
    print(f"  by status: {', '.join(parts) if parts else 'nothing found'}", file=out)
    categories = counts["by_category"]
    if categories:
        width = max(len(name) for name in categories)
        print("  per category: ok / found / sampled", file=out)
        for name in sorted(categories, key=lambda key: (-categories[key], key)):
            print(f"    {name.ljust(width)}  {categories[name]:>7,} / {counts['found_by_category'].get(name, 0):>7,}"
                  f" / {counts['sample_by_category'].get(name, 0):>6,}", file=out)
    sample = record["sample"]
    per = "every ok image" if sample["per_category"] is None else f"{sample['per_category']} per category"
    print(f"  sample: {sample['rows']:,} rows from {len(sample['categories'])} categories ({per}, seed {record['seed']})",
          file=out)
    for name, count in sample["left_out"].items():
        print(f"warning: category {name!r} has {count} ok image{'s' if count != 1 else ''}, fewer than "
              f"--min-per-category {sample['min_per_category']}: left out of the sample", file=sys.stderr)
    if counts["ignored_dirs"] or counts["ignored_files"]:
        print(f"  ignored: {counts['ignored_dirs']} folder(s) not taken as images, "
              f"{counts['ignored_files']} file(s) outside the layout", file=out)
        for line in record.get("ignored_dirs", [])[:5]:
            print(f"    {line}", file=out)
    for note in record.get("notes", [])[:10]:
        print(f"  note: {note}", file=out)
    if timing:
        engine = timing["engine"] or {"kind": "local"}
        where = (f"{timing['workers']} worker(s)" if engine["kind"] == "local"
                 else f"Ray ({engine['nodes']} node(s), {engine['cpus']} CPUs)")
        print(f"  decoded {timing['decoded']:,} files in {timing['decode_seconds']:.1f} s with {where}; "
              f"{timing['reused']:,} decode results reused from the previous scan", file=out)
