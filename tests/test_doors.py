"""Every option of a study stage is reachable from both doors: the CLI and a config (``pintopic run``)."""
from __future__ import annotations

import pytest

from pintopic.cli import build_parser
from pintopic.config import DEFAULTS

#: CLI option (command, dest) -> config key; None: an option with no config meaning (said why).
CLI_TO_CONFIG = {
    ("ingest", "source"): "dataset.source", ("ingest", "layout"): "dataset.layout",
    ("ingest", "categories"): "dataset.categories",
    ("ingest", "exclude"): "dataset.exclude", ("ingest", "per_category"): "dataset.per_category",
    ("ingest", "min_per_category"): "dataset.min_per_category", ("ingest", "seed"): "dataset.seed",
    ("ingest", "max_pixels"): "dataset.max_pixels", ("ingest", "workers"): "dataset.workers",
    ("ingest", "no_decode_cache"): "dataset.decode_cache", ("ingest", "pixel_cache"): "dataset.pixel_cache",
    ("ingest", "max_metadata_bytes"): "dataset.max_metadata_bytes",
    **{(command, dest): f"engine.{key}" for command in ("ingest", "extract")
       for dest, key in (("engine", "kind"), ("ray_address", "address"), ("ray_actors", "actors"),
                         ("ray_actor_threads", "actor_threads"))},
    ("extract", "backbone"): "features.backbones", ("extract", "batch_size"): "features.batch_size",
    ("extract", "workers"): "features.workers", ("extract", "device"): "features.device",
    ("extract", "dtype"): "features.dtype", ("extract", "runtime"): "features.runtime",
    ("extract", "all"): "features.all_rows", ("extract", "no_pretrained"): "features.pretrained",
    ("extract", "weights"): "features.weights", ("extract", "tta"): "features.tta",
    ("extract", "precision"): "features.precision", ("extract", "split"): "classify.split",
    ("extract", "test_size"): "classify.test_size", ("extract", "seed"): "classify.seed",
    ("finetune", "backbone"): "finetune.backbone", ("finetune", "stages"): "finetune.stages",
    ("finetune", "epochs"): "finetune.epochs", ("finetune", "batch_size"): "finetune.batch_size",
    ("finetune", "lr"): "finetune.lr", ("finetune", "patience"): "finetune.patience",
    ("finetune", "views"): "finetune.views", ("finetune", "device"): "features.device",
    ("finetune", "runtime"): "features.runtime", ("finetune", "workers"): "features.workers",
    ("finetune", "seed"): "classify.seed", ("finetune", "out"): "finetune.out",
    ("finetune", "split"): "classify.split", ("finetune", "test_size"): "classify.test_size",
    ("evaluate", "backbone"): "features.backbones", ("evaluate", "classifier"): "classify.classifiers",
    ("evaluate", "cv"): "classify.cv", ("evaluate", "test_size"): "classify.test_size",
    ("evaluate", "split"): "classify.split", ("evaluate", "seed"): "classify.seed",
    ("evaluate", "knn_metric"): "classify.knn_metric", ("evaluate", "grid"): "classify.grids",
    ("evaluate", "label_issues"): "classify.label_issues", ("evaluate", "truth"): "classify.truth",
    ("profile", "source"): "run.folder", ("profile", "truth"): "classify.truth", ("profile", "seed"): "classify.seed",
    ("profile", "board_rule"): "profile.board_rule", ("profile", "user_rule"): "profile.user_rule",
    ("report", "screenshot"): "report.screenshot", ("report", "screenshot_height"): "report.screenshot_height",
}
#: Options that only say where to work or how to talk, not what the stage computes.
NOT_STAGE_OPTIONS = {"run", "quiet", "handler", "command"}


def _lookup(key: str):
    node = DEFAULTS
    for part in key.split("."):
        node = node[part]
    return node


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


@pytest.mark.parametrize("command", ["ingest", "extract", "finetune", "evaluate", "profile", "report"])
def test_every_stage_option_has_a_config_key(command):
    dests = {action.dest for action in _subparsers()[command]._actions if action.dest != "help"}
    for dest in dests - NOT_STAGE_OPTIONS:
        assert (command, dest) in CLI_TO_CONFIG, f"`pintopic {command}` option {dest!r} has no config key"
        _lookup(CLI_TO_CONFIG[(command, dest)])  # the key exists in the config's defaults


def test_every_config_key_of_a_stage_has_a_cli_option():
    reachable = set(CLI_TO_CONFIG.values())
    run_only = {"name", "run.folder", "finetune.enabled", "report.enabled", "profile.enabled"}
    for section in ("dataset", "features", "finetune", "classify", "profile", "report", "engine"):
        for key in DEFAULTS[section]:
            dotted = f"{section}.{key}"
            assert dotted in reachable or dotted in run_only, f"config key {dotted} has no CLI option"


def test_run_passes_every_configured_option(tmp_path, tiny_folders, monkeypatch):
    """Regression: run never passed the runtime to finetune, and the KNN metric was reachable from neither door."""
    import pintopic.classify.evaluation as evaluation
    import pintopic.dataset.ingestion as ingestion
    import pintopic.features.extraction as extraction
    import pintopic.features.pixel_cache as pixel_cache
    import pintopic.train.finetuning as finetuning
    from pintopic.run import run_study

    calls: dict[str, dict] = {}
    monkeypatch.setattr(ingestion, "ingest", lambda *a, **k: calls.setdefault("ingest", k))
    monkeypatch.setattr(pixel_cache, "build_pixel_caches", lambda *a, **k: calls.setdefault("pixel_cache", k))
    monkeypatch.setattr(finetuning, "finetune", lambda *a, **k: calls.setdefault("finetune", k))
    monkeypatch.setattr(extraction, "extract", lambda *a, **k: calls.setdefault("extract", k) and [])
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: calls.setdefault("evaluate", k) and {"rows": []})
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    config = tmp_path / "c.toml"
    # stage_processes = false: the stages replaced here exist only in this process
    config.write_text(f'''[run]\nfolder = "run"\nstage_processes = false\n[dataset]\nsource = "{tiny_folders}"\ndecode_cache = false\n
[features]\nbackbones = ["lite0"]\nruntime = "torch"\nweights = "{weights}"\nall_rows = true\nprecision = "int8"\n
[finetune]\nenabled = true\n[classify]\nknn_metric = "cosine"\nsplit = "group:user"\n[report]\nenabled = false\n
[engine]\nactor_threads = 3\n''')
    run_study(config, progress=False)
    assert calls["ingest"]["decode_cache"] is False
    assert calls["finetune"]["runtime"] == "torch" and calls["finetune"]["split"] == "group:user"
    assert calls["extract"]["weights"] == str(weights) and calls["extract"]["all_rows"] is True
    # INT8 calibration images come from the split evaluate will use
    assert calls["extract"]["precision"] == "int8" and calls["extract"]["split"] == "group:user"
    assert calls["evaluate"]["metric"] == "cosine"
    assert calls["ingest"]["engine"].actor_threads == calls["extract"]["engine"].actor_threads == 3


def test_cli_evaluate_reaches_metric_and_grids(monkeypatch, tmp_path):
    import pintopic.classify.evaluation as evaluation
    from pintopic.cli import main

    seen = {}

    def fake_evaluate(run, **settings):
        seen.update(settings)
        (tmp_path / "results").mkdir(exist_ok=True)
        (tmp_path / "results" / "table.md").write_text("")
        return {"rows": []}

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    assert main(["evaluate", str(tmp_path), "--knn-metric", "cosine", "--grid", "knn.k=1,3", "--grid",
                 "wknn.temperature=[0.1]", "-q"]) == 0
    assert seen["metric"] == "cosine"
    assert seen["grids"] == {"knn": {"k": [1, 3]}, "wknn": {"k": [10, 20], "temperature": [0.1], "whiten": [0]}}
    assert main(["evaluate", str(tmp_path), "--grid", "knn.C=1"]) == 2  # not a knn parameter: one clear error
