"""The ``pintopic`` command: parse arguments, call the library, print. Heavy imports stay inside commands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _csv_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _cmd_ingest(args: argparse.Namespace) -> int:
    from pintopic.dataset import ingest

    ingest(
        args.source, args.run, layout=args.layout, exclude=args.exclude,
        per_category=args.per_category, min_per_category=args.min_per_category, seed=args.seed,
        max_pixels=args.max_pixels, workers=args.workers, progress=not args.quiet,
        decode_cache=not args.no_decode_cache,
    )
    if args.pixel_cache:
        from pintopic.features.pixel_cache import build_pixel_caches

        build_pixel_caches(args.run, args.pixel_cache, workers=args.workers, progress=not args.quiet)
    return 0


def _cmd_make_crawl(args: argparse.Namespace) -> int:
    from pintopic.dataset import make_crawl

    summary = make_crawl(args.source, args.out, users=args.users, seed=args.seed)
    print(f"wrote a crawl of {summary['pins']} pins, {summary['boards']} boards, {summary['users']} users to {args.out}")
    return 0


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
        weights=args.weights, runtime=args.runtime, tta=args.tta, progress=not args.quiet, precision=args.precision,
        split=args.split, test_size=args.test_size, seed=args.seed,
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
        grids=_grid_overrides(args.grid) or None, progress=not args.quiet,
    )
    print((Path(args.run) / "results" / "table.md").read_text())
    print(f"results: {Path(args.run) / 'results'} ({len(results['rows'])} rows)")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from pintopic.predict import format_predictions, predict

    if args.zero_shot:  # no model folder: the first positional is an image too
        from pintopic.errors import PintopicError
        from pintopic.predict import zero_shot_predict

        if not args.categories:
            raise PintopicError("--zero-shot needs --categories a,b,c (the categories to choose from)")
        predictions = zero_shot_predict(args.zero_shot, args.categories, [args.model_dir, *args.inputs], top_k=args.top_k)
    else:
        if not args.inputs:
            from pintopic.errors import PintopicError

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


def _ingest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="crawl folder, folders dataset, or CSV/Parquet table")
    p.add_argument("run", help="run folder")
    p.add_argument("--layout", default="auto", choices=["auto", "crawl", "folders", "table"])
    p.add_argument("--exclude", type=_csv_list, default=["none", "other"], help="categories to drop (comma-separated)")
    p.add_argument("--per-category", type=int, default=None, help="images sampled per category (default: all)")
    p.add_argument("--min-per-category", type=int, default=5, help="categories with fewer ok images are left out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-pixels", type=int, default=None, help="larger images get status too_large (default: Pillow's limit)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: CPU count)")
    p.add_argument("--no-decode-cache", action="store_true",
                   help="keep no small decoded copies of PNG/large files for extraction (RUN/dataset/cache/)")
    p.add_argument("--pixel-cache", type=_csv_list, default=[], metavar="BACKBONES",
                   help="store the sample's exact model inputs for these backbones (comma-separated), decoded once for "
                        "all, so extract skips decoding (RUN/dataset/pixels/; N x 150 KB per 224x224 input size)")

def _make_crawl_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="folders dataset: SOURCE/<category>/**/<image>")
    p.add_argument("out", help="output crawl folder")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)

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

def _predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="a model folder (RUN/results/models/...), or with --zero-shot the first image")
    p.add_argument("inputs", nargs="*", help="images or folders")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--zero-shot", metavar="OPENCLIP_BACKBONE", help="no model: classify by category names with "
                   "this openclip:<arch>/<tag> backbone's text tower")
    p.add_argument("--categories", type=_csv_list, help="with --zero-shot: the categories to choose from")
    p.add_argument("--format", default="table", choices=["table", "json", "csv"])

def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run")
    p.add_argument("--screenshot", metavar="PNG", help="also save a headless-Chromium screenshot of the report's top part")
    p.add_argument("--screenshot-height", type=int, default=900, metavar="PIXELS", help="screenshot height (width 1280)")

def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=str(Path(__file__).resolve().parent.parent / "configs" / "demo.toml"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. dataset.per_category=20")


#: Every command: (name, handler, help, arguments).
COMMANDS = [
    ("ingest", _cmd_ingest, "Scan a collection, verify every image, write RUN/dataset/ (manifest, sample, distribution).",
     _ingest_arguments),
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
    ("predict", _cmd_predict, "Top-k categories for images with a fitted model folder.",
     _predict_arguments),
    ("report", _cmd_report, "Write RUN/report.html, a self-contained report of the run.",
     _report_arguments),
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
    args = build_parser().parse_args(argv)
    from pintopic.errors import PintopicError

    try:
        return args.handler(args)
    except PintopicError as error:
        print(f"pintopic: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pintopic: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
