"""End to end: `pintopic run` on tiny configs — every output, reruns that touch nothing, partial reruns."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, make_image


def _pintopic(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pintopic", *args], cwd=cwd, capture_output=True, text=True, timeout=900)


def _snapshot(run: Path) -> dict[str, tuple[bytes, int]]:
    files = {}
    for path in sorted(run.rglob("*")):
        if path.is_file() and path.name not in ("run.log", ".lock"):
            files[str(path.relative_to(run))] = (path.read_bytes(), path.stat().st_mtime_ns)
    return files


@pytest.mark.timeout(900)
def test_run_writes_every_output_and_reruns_touch_nothing(tiny_study: Path):
    run = tiny_study.parent / "run"
    first = _pintopic("run", str(tiny_study), "--quiet")
    assert first.returncode == 0, first.stderr
    assert "| lsvm |" in first.stdout  # the table is printed

    for relative in ["config.resolved.toml", "run.json", "dataset/manifest.parquet", "dataset/sample.parquet",
                     "dataset/distribution.csv", "dataset/distribution.png", "dataset/dataset.json",
                     "results/results.json", "results/split.parquet", "results/table.md", "results/table.csv",
                     "results/table.tex", "report.html"]:
        assert (run / relative).is_file(), relative
    stores = list((run / "features").glob("*/meta.json"))
    assert len(stores) == 1
    meta = json.loads(stores[0].read_text())
    assert meta["spec"] == "timm:test_efficientnet" and meta["n_rows"] == 36
    results = json.loads((run / "results" / "results.json").read_text())
    assert {row["classifier"] for row in results["rows"]} == {"knn", "lsvm", "nn"}
    for row in results["rows"]:
        assert row["n_train"] + row["n_test"] == 36
        assert row["test_f1_macro"] > 1 / 3  # above chance on three clearly coloured categories
        key = stores[0].parent.name
        assert (run / "results" / "confusion" / f"{key}__{row['classifier']}.csv").is_file()
        assert (run / "results" / "models" / f"{key}__{row['classifier']}").is_dir()

    before = _snapshot(run)
    second = _pintopic("run", str(tiny_study), "--quiet")
    assert second.returncode == 0, second.stderr
    assert _snapshot(run) == before, "a second run of the same config must modify no output file"

    # a no-op rerun does no model work: neither torch nor timm is even imported
    check = subprocess.run([sys.executable, "-c", (
        "import sys, contextlib, io\n"
        "from pintopic.run import run_study\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    run_study({str(tiny_study)!r}, progress=False)\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'torchvision', 'onnxruntime') if m in sys.modules)\n"
        "assert not heavy, heavy\n")], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert _snapshot(run) == before


@pytest.mark.timeout(900)
def test_changed_grid_reuses_features(tiny_study: Path):
    run = tiny_study.parent / "run"
    assert _pintopic("run", str(tiny_study), "--quiet").returncode == 0
    store = next((run / "features").glob("*/meta.json")).parent
    store_before = {p.name: p.stat().st_mtime_ns for p in store.iterdir()}
    results_before = json.loads((run / "results" / "results.json").read_text())

    changed = _pintopic("run", str(tiny_study), "--quiet", "--set", "classify.grids.knn.k=[1, 5]")
    assert changed.returncode == 0, changed.stderr
    assert {p.name: p.stat().st_mtime_ns for p in store.iterdir()} == store_before, "features were recomputed"
    results_after = json.loads((run / "results" / "results.json").read_text())
    knn_after = next(r for r in results_after["rows"] if r["classifier"] == "knn")
    knn_before = next(r for r in results_before["rows"] if r["classifier"] == "knn")
    assert knn_after["best_params"] != knn_before["best_params"] or knn_after["cv_results"] != knn_before["cv_results"]


def _crawl_of_32_categories(tmp_path: Path, per_category: int) -> Path:
    from pintopic.categories import CANONICAL

    folders = tmp_path / "gen32"
    for index, category in enumerate(CANONICAL):
        color = ((index * 53) % 256, (index * 97) % 256, (index * 151) % 256)
        for i in range(per_category):
            make_image(folders / category / f"{i:02d}.jpg", color=color, size=(40, 32), seed=index * 1000 + i)
    crawl = tmp_path / "crawl"
    made = _pintopic("make-crawl", str(folders), str(crawl), "--users", "6", "--seed", "1")
    assert made.returncode == 0, made.stderr
    return crawl


@pytest.mark.timeout(1200)
def test_paper_config_runs_end_to_end_with_overrides(tmp_path: Path):
    crawl = _crawl_of_32_categories(tmp_path, per_category=10)
    run = tmp_path / "paper-run"
    result = _pintopic(
        "run", str(REPO / "configs" / "paper.toml"), "--quiet",
        "--set", f"dataset.source={json.dumps(str(crawl))}",
        "--set", f"run.folder={json.dumps(str(run))}",
        "--set", "dataset.per_category=10",
        "--set", 'features.backbones=["timm:test_efficientnet", "timm:test_convnext"]',
        "--set", "features.pretrained=false",
        "--set", "report.enabled=false",
    )
    assert result.returncode == 0, result.stderr
    results = json.loads((run / "results" / "results.json").read_text())
    assert len(results["categories"]) == 32
    assert {(r["backbone"], r["classifier"]) for r in results["rows"]} == {
        (b, c) for b in ("timm:test_efficientnet", "timm:test_convnext") for c in ("knn", "lsvm", "nn")
    }
    table = (run / "results" / "table.md").read_text()
    assert "timm:test_convnext" in table and "average" in table.lower()
    resolved = (run / "config.resolved.toml").read_text()
    assert "per_category = 10" in resolved and "1000" not in resolved.split("[features]")[0]


def test_help_is_instant_and_lists_commands():
    result = _pintopic("--help")
    assert result.returncode == 0
    for command in ("ingest", "make-crawl", "backbones", "extract", "evaluate", "predict", "report", "run"):
        assert command in result.stdout
    probe = subprocess.run([sys.executable, "-c", "import sys, pintopic.cli; pintopic.cli.build_parser();"
                            "print(sorted(m for m in ('torch','timm','sklearn','pandas','matplotlib') if m in sys.modules))"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "[]", "heavy libraries imported at CLI start-up"


def test_bad_config_is_one_clear_line(tmp_path: Path):
    config = tmp_path / "bad.toml"
    config.write_text("[dataset]\nsource = 'x'\nper_categroy = 3\n")
    result = _pintopic("run", str(config))
    assert result.returncode == 2
    assert "unknown config key dataset.per_categroy" in result.stderr
    assert "Traceback" not in result.stderr
