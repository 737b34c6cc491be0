"""The ``pintopic`` command: parse arguments, call the library, print. Heavy imports stay inside commands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _csv_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _engine(args: argparse.Namespace):
    """The engine settings of ``--engine`` and ``--ray-address`` (checked here, so a bad address fails at once)."""
    from pintopic.engine import EngineSettings

    return EngineSettings(kind=args.engine, address=args.ray_address, actors=args.ray_actors,
                          actor_threads=args.ray_actor_threads)


def _add_engine_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--engine", default="local", choices=["local", "ray"],
                         help="where the work runs: this machine, or a Ray cluster (pip install 'pintopic[ray]')")
    command.add_argument("--ray-address", default="auto", metavar="ADDRESS",
                         help="with --engine ray: auto (RAY_ADDRESS or the cluster `ray start` left here), local "
                              "(a private one-machine Ray), HOST:PORT of the head, or ray://HOST:10001")
    command.add_argument("--ray-actors", type=int, default=0, metavar="N",
                         help="with --engine ray: model actors (default 0: one per GPU, else one per --ray-actor-threads CPUs)")
    command.add_argument("--ray-actor-threads", type=int, default=2, metavar="T",
                         help="with --engine ray: inference threads of each CPU model actor (default 2)")


def _cmd_ingest(args: argparse.Namespace) -> int:
    from pintopic.dataset import ingest

    ingest(
        args.source, args.run, layout=args.layout, exclude=args.exclude,
        per_category=args.per_category, min_per_category=args.min_per_category, seed=args.seed,
        max_pixels=args.max_pixels, workers=args.workers, progress=not args.quiet,
        decode_cache=not args.no_decode_cache, categories=args.categories,
        max_metadata_bytes=args.max_metadata_bytes, engine=_engine(args),
    )
    if args.pixel_cache:
        from pintopic.features.pixel_cache import build_pixel_caches

        build_pixel_caches(args.run, args.pixel_cache, workers=args.workers, progress=not args.quiet)
    return 0


def _cmd_collect(args: argparse.Namespace) -> int:
    from pintopic.collect import collect

    options = {"allow_hosts": args.allow_host} if args.allow_host else {}
    summary = collect(
        args.out, args.tokens, categories=args.categories, progress=not args.quiet, image_size=args.image_size,
        multi_image=args.multi_image, max_pins_per_board=args.max_pins_per_board, since=args.since, rate=args.rate,
        concurrency=args.concurrency, api_base=args.api_base, max_image_bytes=args.max_image_bytes, **options,
    )
    counts = summary["counts"]
    state = "complete" if summary["complete"] else "incomplete (see collect.json; rerun the same command to resume)"
    print(f"collect: {counts['users']} user(s), {counts['boards']} board(s), {counts['pins_on_disk']:,} pins on disk, "
          f"{counts['not_fetched']:,} not fetched (each with its reason in {Path(args.out) / 'collect.json'}); {state}")
    return 0 if summary["complete"] else 1


def _cmd_make_crawl(args: argparse.Namespace) -> int:
    from pintopic.dataset import make_crawl

    summary = make_crawl(args.source, args.out, users=args.users, seed=args.seed, off_theme=args.off_theme,
                         wrong_boards=args.wrong_boards, board_size=args.board_size, taste=args.taste)
    print(f"wrote a crawl of {summary['pins']} pins, {summary['boards']} boards, {summary['users']} users to {args.out}")
    if "truth" in summary:
        print(f"noise: {summary['off_theme_pins']} off-theme pins, {summary['wrong_boards']} wrongly filed boards, "
              f"{summary['unused']} source images unused; true categories: {summary['truth']}")
    return 0


def _board_size(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX (e.g. 10-60), got {text!r}") from None


def _cmd_backbones(args: argparse.Namespace) -> int:
    from pintopic.features.builder import describe_backbones

    rows = describe_backbones()
    header = ("name", "model", "dim", "input", "weights", "available")
    table = [header] + [tuple(str(row[key]) for key in header) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from pintopic.features import extract

    folders = extract(
        args.run, args.backbone, batch_size=args.batch_size, workers=args.workers,
        device=args.device, dtype=args.dtype, all_rows=args.all, pretrained=not args.no_pretrained,
        weights=args.weights, runtime=args.runtime, tta=args.tta, progress=not args.quiet, engine=_engine(args),
        precision=args.precision, split=args.split, test_size=args.test_size, seed=args.seed,
    )
    for folder in folders:
        print(f"features: {folder}")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from pintopic.features.finetuned import finetuned_info
    from pintopic.train.finetuning import finetune

    folder = finetune(
        args.run, backbone=args.backbone, stages=args.stages, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, patience=args.patience, views=args.views, device=args.device, runtime=args.runtime,
        seed=args.seed, name=args.out, workers=args.workers, test_size=args.test_size, split=args.split,
        progress=not args.quiet,
    )
    info = finetuned_info(f"finetuned:{folder}")
    print(f"finetuned: {folder} (best validation macro-F1 {info['best_val_f1_macro']:.4f} at epoch {info['best_epoch']})")
    print(f"use it as a backbone: pintopic extract {args.run} --backbone finetuned:{folder.name}")
    return 0


def _grid_overrides(items: list[str]) -> dict:
    """``["knn.k=1,5,10", ...]`` -> ``{"knn": {"k": [1, 5, 10]}}``, other parameters of that grid left at their defaults."""
    from pintopic.classify.catalog import default_grids, entry
    from pintopic.config import parse_list
    from pintopic.errors import PintopicError

    grids: dict[str, dict] = {}
    for item in items:
        name, _, rest = item.partition(".")
        parameter, equals, text = rest.partition("=")
        if not equals or not parameter or parameter not in entry(name).grid:
            raise PintopicError(f"--grid expects CLASSIFIER.PARAM=VALUES with a parameter of that classifier's grid "
                                f"({', '.join(f'{name}.{p}' for p in entry(name).grid)}), got {item!r}")
        grids.setdefault(name, default_grids()[name])[parameter] = parse_list(text)
    return grids


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pintopic.classify import evaluate

    results = evaluate(
        args.run, backbones=args.backbone, classifiers=args.classifier, cv=args.cv,
        test_size=args.test_size, split=args.split, seed=args.seed, metric=args.knn_metric,
        grids=_grid_overrides(args.grid) or None, progress=not args.quiet, label_issues=args.label_issues,
        truth=args.truth,
    )
    from pintopic.safeio import read_regular

    print(read_regular(Path(args.run) / "results" / "table.md").decode("utf-8", "replace"))
    print(f"results: {Path(args.run) / 'results'} ({len(results['rows'])} rows)")
    if args.label_issues:
        from pintopic.runio import read_json

        noise = read_json(Path(args.run) / "results" / "noise.json")
        print(f"label issues: {noise['flags']['flagged']} of {noise['flags']['n_pins']} pins flagged "
              f"({Path(args.run) / 'results' / 'label_issues.parquet'}); training through the noise: "
              f"{noise['options']['chosen']} (chosen by CV)")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from pintopic.predict.profile import profile

    record = profile(args.source, truth=args.truth, board_rule=args.board_rule, user_rule=args.user_rule, seed=args.seed)
    print(f"boards: {record['n_boards']} (rule {record['board_rule']}), users: {record['n_users']}, pins: {record['n_pins']}")
    truth = record.get("truth")
    if truth:
        boards, users = truth["boards"], truth["users"]
        print(f"against the truth: board accuracy {boards['accuracy']:.3f} ({boards['evaluated']} {boards['part']} boards "
              f"with >= {record['min_board_pins']} pins); mean JS divergence of user profiles "
              f"{users['mean_js_divergence']:.3f} ({users['evaluated']} users with >= {record['min_user_pins']} pins)")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from pintopic.errors import PintopicError
    from pintopic.predict import format_predictions, predict

    if args.out:
        if args.zero_shot or len(args.inputs) != 1:
            raise PintopicError("--out predicts a whole source: give a model folder and one crawl, folders dataset or table")
        from pintopic.predict.crawl import predict_crawl

        record = predict_crawl(args.model_dir, args.inputs[0], args.out, layout=args.layout, top_k=args.top_k,
                               batch_size=args.batch_size, engine=_engine(args), workers=args.workers,
                               progress=not args.quiet)
        return 1 if record["images"] and not record["by_status"].get("ok") else 0
    if args.engine != "local":
        raise PintopicError("--engine ray runs crawl-wide prediction: add --out predictions.parquet")
    if args.zero_shot:  # no model folder: the first positional is an image too
        from pintopic.predict import zero_shot_predict

        if not args.categories:
            raise PintopicError("--zero-shot needs --categories a,b,c (the categories to choose from)")
        predictions = zero_shot_predict(args.zero_shot, args.categories, [args.model_dir, *args.inputs], top_k=args.top_k)
    else:
        if not args.inputs:
            raise PintopicError("give a model folder and at least one image or folder")
        predictions = predict(args.model_dir, args.inputs, top_k=args.top_k)
    print(format_predictions(predictions, args.format))
    return 1 if predictions and all(p.get("error") for p in predictions) else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pintopic.report import build_report

    report = build_report(args.run)
    print(f"report: {report}")
    if args.screenshot:
        from pintopic.report.screenshot import screenshot

        print(f"screenshot: {screenshot(report, args.screenshot, height=args.screenshot_height)}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from pintopic.run import run_study

    run_study(args.config, overrides=args.set, progress=not args.quiet)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from pintopic.errors import PintopicError
    from pintopic.serve.settings import ServeSettings

    options = {name: getattr(args, name) for name in ("host", "port", "api_keys", "workers", "max_batch", "max_wait_ms",
                                                      "queue", "max_upload_bytes", "max_files", "max_pixels",
                                                      "cors_origins")}
    options["insecure"] = args.insecure or None
    folders = args.model_dirs
    if args.config:
        from pintopic.config import load_config
        from pintopic.serve.models import config_model_folders

        config = load_config(args.config, args.set)
        settings = ServeSettings.from_mapping({**config["serve"], **{k: v for k, v in options.items() if v is not None}})
        folders = folders or config_model_folders(config["run"]["folder"], settings.models)
    elif args.set:
        raise PintopicError("--set needs --config (it overrides a config file's values)")
    else:
        settings = ServeSettings.from_mapping(options)
    if not folders:
        raise PintopicError("give the model folders to serve (RUN/results/models/<name>) or --config CONFIG")
    from pintopic.serve.server import serve

    serve(folders, settings, log_level="warning" if args.quiet else "info")
    return 0


def _ingest_arguments(p: argparse.ArgumentParser) -> None:
    from pintopic.safeio import MAX_METADATA_BYTES

    p.add_argument("source", help="crawl folder, gallery-dl download folder, folders dataset, or CSV/Parquet table")
    p.add_argument("run", help="run folder")
    p.add_argument("--layout", default="auto", choices=["auto", "crawl", "gallery-dl", "folders", "table"])
    p.add_argument("--categories", metavar="MAP.csv", default=None,
                   help="board -> category map (columns category and board_id, or owner + board) for boards without one")
    p.add_argument("--exclude", type=_csv_list, default=["none", "other"], help="categories to drop (comma-separated)")
    p.add_argument("--per-category", type=int, default=None, help="images sampled per category (default: all)")
    p.add_argument("--min-per-category", type=int, default=5, help="categories with fewer ok images are left out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-pixels", type=int, default=None, help="larger images get status too_large (default: Pillow's limit)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: CPU count)")
    p.add_argument("--max-metadata-bytes", type=int, default=MAX_METADATA_BYTES, metavar="BYTES",
                   help="a boards.json or pin.json larger than this is bad_metadata, not read (default: 8 MiB)")
    p.add_argument("--no-decode-cache", action="store_true",
                   help="keep no small decoded copies of PNG/large files for extraction (RUN/dataset/cache/)")
    p.add_argument("--pixel-cache", type=_csv_list, default=[], metavar="BACKBONES",
                   help="store the sample's exact model inputs for these backbones (comma-separated), decoded once for "
                        "all, so extract skips decoding (RUN/dataset/pixels/; N x 150 KB per 224x224 input size)")
    _add_engine_options(p)

def _collect_arguments(p: argparse.ArgumentParser) -> None:
    from pintopic.collect.api import DEFAULT_API_BASE, DEFAULT_IMAGE_HOSTS, IMAGE_SIZES

    p.add_argument("out", help="output crawl folder (new, empty, or an earlier collection)")
    p.add_argument("--tokens", required=True, metavar="FILE", help="one consenting user's access token per line (never logged or copied)")
    p.add_argument("--categories", metavar="MAP.csv", default=None,
                   help="board -> category map: columns category and board_id, or owner + board (v5 has no board category)")
    p.add_argument("--image-size", default="1200x", choices=IMAGE_SIZES)
    p.add_argument("--multi-image", default="first", choices=["first", "all"], help="images kept from a multi-image pin")
    p.add_argument("--max-pins-per-board", type=int, default=None, metavar="N")
    p.add_argument("--since", default=None, metavar="DATE", help="only pins created on or after DATE (YYYY-MM-DD)")
    p.add_argument("--rate", type=float, default=5.0, help="API requests per second, all users together")
    p.add_argument("--concurrency", type=int, default=8, help="image downloads at once")
    p.add_argument("--api-base", default=DEFAULT_API_BASE, metavar="URL")
    p.add_argument("--allow-host", action="append", default=None, metavar="HOST",
                   help=f"host images may come from (repeatable; default {', '.join(DEFAULT_IMAGE_HOSTS)})")
    p.add_argument("--max-image-bytes", type=int, default=20 * 1024 * 1024, metavar="BYTES")


def _make_crawl_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="folders dataset: SOURCE/<category>/**/<image>")
    p.add_argument("out", help="output crawl folder")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--off-theme", type=float, default=0.0, metavar="F",
                   help="noisy crawl: this share of every board's pins comes from other categories")
    p.add_argument("--wrong-boards", type=float, default=0.0, metavar="F",
                   help="noisy crawl: this share of boards is filed under a wrong category")
    p.add_argument("--board-size", type=_board_size, default=None, metavar="MIN-MAX",
                   help="noisy crawl: pins per board (default 10-60 when --off-theme or --wrong-boards is set)")
    p.add_argument("--taste", type=int, default=3, help="noisy crawl: dominant categories per user")

def _extract_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run")
    p.add_argument("--backbone", type=_csv_list, default=["lite0"], help="comma-separated backbone names (see `pintopic backbones`)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="decoding processes")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "int8"],
                   help="storage type of the vectors; int8: the backbone runs as an ONNX Runtime INT8 graph (static "
                        "quantization calibrated on the run's training images, its own store), vectors stored as float32")
    p.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnx"], help="inference runtime (auto: ONNX Runtime on CPU)")
    p.add_argument("--all", action="store_true", help="every ok row of the manifest, not only the sample")
    p.add_argument("--no-pretrained", action="store_true", help="random weights (for tests and speed checks)")
    p.add_argument("--weights", default=None, help="a local weights file for the (single) backbone")
    p.add_argument("--tta", default=None, choices=[None, "flip"], help="test-time augmentation averaged into each vector")
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                   help="compute precision of the backbone (--precision int8 is --dtype int8 with the vectors stored "
                        "as --dtype float32 or float16)")
    p.add_argument("--split", default=None, help="with --dtype int8, only where the run has no split yet: "
                   "stratified | group:user | group:board (default stratified)")
    p.add_argument("--test-size", type=float, default=None, help="with --dtype int8, only where the run has no "
                   "split yet (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="with --dtype int8, the seed of a split made now")
    _add_engine_options(p)

def _finetune_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run")
    p.add_argument("--backbone", default="lite0", help="base backbone (a preset or timm:<name>)")
    p.add_argument("--stages", type=int, default=1, help="last stages trained (the earlier ones are frozen and cached)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="head learning rate (the trained stages get a tenth)")
    p.add_argument("--patience", type=int, default=2, help="epochs without validation improvement before stopping")
    p.add_argument("--views", type=int, default=2, help="cached views per image: the plain crop + random resized crops")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnx"], help="runtime of the frozen trunk")
    p.add_argument("--workers", type=int, default=None, help="decoding processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder name under RUN/finetune/ (default: <backbone>-s<stages>)")
    p.add_argument("--split", default=None, help="only where the run has no split yet: stratified | group:user | "
                   "group:board (default stratified); an existing split is always the one used")
    p.add_argument("--test-size", type=float, default=None, help="only where the run has no split yet (default 0.2)")

def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run")
    p.add_argument("--backbone", type=_csv_list, default=None, help="default: every extracted backbone")
    p.add_argument("--classifier", type=_csv_list, default=["knn", "lsvm", "nn"])
    p.add_argument("--cv", type=int, default=5)
    p.add_argument("--test-size", type=float, default=0.2)
    p.add_argument("--split", default="stratified", help="stratified | group:user | group:board")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--knn-metric", default="euclidean", choices=["euclidean", "cosine"],
                   help="distance of the knn classifier (the study: euclidean)")
    p.add_argument("--grid", action="append", default=[], metavar="CLASSIFIER.PARAM=VALUES",
                   help="replace a grid, e.g. --grid knn.k=1,5,10 (repeatable; like classify.grids in a config)")
    p.add_argument("--label-issues", action="store_true", help="also flag suspect pins (results/label_issues.parquet), "
                   "train through the noise (results/noise.json) and keep every pin's probabilities for `profile`")
    p.add_argument("--truth", default=None, metavar="TRUTH_PARQUET",
                   help="with --label-issues: a noisy crawl's truth.parquet, read only to score on the true labels too")


def _profile_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a run folder evaluated with --label-issues, or a predictions parquet with user/board")
    p.add_argument("--truth", default=None, metavar="TRUTH_PARQUET", help="a noisy crawl's truth.parquet, to score against")
    p.add_argument("--board-rule", default="auto", choices=["auto", "mean-log", "mean", "vote", "mixture"])
    p.add_argument("--user-rule", default="filed", choices=["filed", "counts", "board", "mean"])
    p.add_argument("--seed", type=int, default=0)

def _predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="a model folder (RUN/results/models/...), or with --zero-shot the first image")
    p.add_argument("inputs", nargs="*", help="images or folders; with --out, one source (crawl, folders dataset, table)")
    p.add_argument("--out", metavar="PARQUET", help="predict every image of the source into this Parquet file "
                   "(one row per image: image_id, path, user, board, pin, status, reason, top-k)")
    p.add_argument("--layout", default="auto", choices=["auto", "crawl", "gallery-dl", "folders", "table"],
                   help="with --out: the source's layout")
    p.add_argument("--batch-size", type=int, default=32, help="with --out: images per model batch")
    p.add_argument("--workers", type=int, default=None, help="with --out and the local engine: decoding processes")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--zero-shot", metavar="OPENCLIP_BACKBONE", help="no model: classify by category names with "
                   "this openclip:<arch>/<tag> backbone's text tower")
    p.add_argument("--categories", type=_csv_list, help="with --zero-shot: the categories to choose from")
    p.add_argument("--format", default="table", choices=["table", "json", "csv"])
    _add_engine_options(p)

def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run")
    p.add_argument("--screenshot", metavar="PNG", help="also save a headless-Chromium screenshot of the report's top part")
    p.add_argument("--screenshot-height", type=int, default=900, metavar="PIXELS", help="screenshot height (width 1280)")

def _serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dirs", nargs="*", metavar="MODEL_DIR", help="model folders (RUN/results/models/<name>), "
                   "addressed by folder name; default with --config: the run's ensemble, else its best pair by CV")
    p.add_argument("--config", help="a study config: its [serve] section and run folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="with --config: override a value")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; others need --api-keys or --insecure)")
    p.add_argument("--port", type=int, help="default 8000")
    p.add_argument("--api-keys", metavar="FILE", help="one key per line; every /v1 call then needs 'Authorization: Bearer KEY'")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without API keys")
    p.add_argument("--cors-origin", dest="cors_origins", action="append", metavar="ORIGIN",
                   help="allow this web origin to call the API from a browser (repeatable; default: none)")
    p.add_argument("--workers", type=int, help="threads decoding uploads (default: one per core)")
    p.add_argument("--max-batch", type=int, help="images per model run (default 16)")
    p.add_argument("--max-wait-ms", type=float, help="how long a batch waits for more images (default 5)")
    p.add_argument("--queue", type=int, help="images in progress per model before 503 + Retry-After (default 64)")
    p.add_argument("--max-upload-bytes", type=int, help="request body limit, enforced while reading (default 32 MiB)")
    p.add_argument("--max-files", type=int, help="images per request (default 16)")
    p.add_argument("--max-pixels", type=int, help="pixel limit from the image header (default: Pillow's, as ingest)")


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=str(Path(__file__).resolve().parent.parent / "configs" / "demo.toml"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. dataset.per_category=20")


#: Every command: (name, handler, help, arguments).
COMMANDS = [
    ("ingest", _cmd_ingest, "Scan a collection, verify every image, write RUN/dataset/ (manifest, sample, distribution).",
     _ingest_arguments),
    ("collect", _cmd_collect, "Collect consenting users' boards and pins from Pinterest's API v5 into a crawl folder "
                              "(resumable; rerun to fetch only new pins).",
     _collect_arguments),
    ("make-crawl", _cmd_make_crawl, "Turn a folders dataset into a synthetic crawl (user/boards/pins) of the study's shape.",
     _make_crawl_arguments),
    ("backbones", _cmd_backbones, "List backbone presets with dims, input size and weight availability.",
     None),
    ("extract", _cmd_extract, "Turn sampled images into feature vectors: RUN/features/<key>/.",
     _extract_arguments),
    ("finetune", _cmd_finetune, "Train the last stages of a backbone on the training part: RUN/finetune/<name>/, "
                                "usable as backbone finetuned:<name>.",
     _finetune_arguments),
    ("evaluate", _cmd_evaluate, "The study's protocol: split, grid-searched classifiers, macro-F1 table: RUN/results/.",
     _evaluate_arguments),
    ("profile", _cmd_profile, "A category per board and an interest profile per user from pin probabilities: "
                              "boards.parquet, users.parquet, profile.json.",
     _profile_arguments),
    ("predict", _cmd_predict, "Top-k categories for images with a fitted model folder; with --out, for every image of "
                              "a crawl, folders dataset or table (streamed, resumable).",
     _predict_arguments),
    ("report", _cmd_report, "Write RUN/report.html, a self-contained report of the run.",
     _report_arguments),
    ("serve", _cmd_serve, "Serve saved models over HTTP: upload images, get their categories (JSON API, web page at /, "
                          "Prometheus /metrics). Binds 127.0.0.1 unless told otherwise.",
     _serve_arguments),
    ("run", _cmd_run, "Run a whole study from a TOML config (ingest, extract, evaluate, report), reusing finished stages.",
     _run_arguments),
]


def build_parser() -> argparse.ArgumentParser:
    from pintopic import __version__

    parser = argparse.ArgumentParser(prog="pintopic", description="Thematic categories for Pinterest-style board "
                                     "images: the study's protocol (ingest, extract, evaluate, report) and beyond.")
    parser.add_argument("--version", action="version", version=f"pintopic {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, handler, help_text, arguments in COMMANDS:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        command.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
        if arguments is not None:
            arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; every failure ends as one line ``pintopic: error: ...`` (``PINTOPIC_DEBUG=1``: the traceback)."""
    import os

    args = build_parser().parse_args(argv)
    from pintopic.errors import PintopicError
    from pintopic.safeio import disk_full, is_disk_full, one_line

    try:
        return args.handler(args)
    except PintopicError as error:
        print(f"pintopic: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pintopic: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as error:
        if os.environ.get("PINTOPIC_DEBUG"):
            raise
        if is_disk_full(error):
            print(f"pintopic: error: {disk_full(error.filename or '.')}", file=sys.stderr)
        else:
            print(f"pintopic: error: {one_line(error)}", file=sys.stderr)
        return 2
    except (MemoryError, RecursionError) as error:
        if os.environ.get("PINTOPIC_DEBUG"):
            raise
        print(f"pintopic: error: ran out of {'memory' if isinstance(error, MemoryError) else 'stack'} "
              f"({type(error).__name__}); the input is too large or too deeply nested", file=sys.stderr)
        return 2
    except Exception as error:  # the last door: a bug still ends as one line, never a traceback
        if os.environ.get("PINTOPIC_DEBUG"):
            raise
        print(f"pintopic: error: unexpected {type(error).__name__}: {one_line(error)} (a bug in pintopic; "
              "PINTOPIC_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 70
