"""The HTML report: every section and figure from a fake 32-category run, self-contained, legible, partial runs."""
from __future__ import annotations

import base64
import hashlib
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_image

from pintopic.categories import CANONICAL, display_name
from pintopic.runio import write_json, write_parquet

BEST_KEY = "efficientnet_lite0-1a2b3c"  # best by cross-validation, though not best on test
OTHER_KEY = "convnext_tiny-4d5e6f"
CLASSIFIERS = ("knn", "lsvm", "nn")
MANY = "animals"  # has 11 test images, more than the 8 the grid may show
LEFT_OUT = "rare_things"  # found, but too few images to sample


def _image_id(relative: str) -> str:
    return hashlib.sha1(relative.encode()).hexdigest()


def make_fake_run(tmp_path: Path, *, with_results: bool = True) -> Path:
    """A run folder in the stages' formats: 32 categories, tiny PNGs, two backbones × three classifiers."""
    source, run = tmp_path / "source", tmp_path / "run"
    rng = np.random.default_rng(0)
    rows = []
    for c_index, category in enumerate(CANONICAL):
        for i in range(11 if category == MANY else 3):
            relative = f"{category}/img_{i}.png"
            color = tuple(int(v) for v in rng.integers(0, 256, 3))
            make_image(source / relative, color=color, size=(60, 44), seed=c_index * 100 + i)
            rows.append(dict(image_id=_image_id(relative), path=relative, abspath=str(source / relative).encode(),
                             user=None, board=None, pin=None, category=category, status="ok", reason_detail="",
                             sha256="0" * 64, width=60, height=44))
    bad = [("broken.png", "truncated", "decoding failed: image file is truncated"), ("empty.jpg", "empty", "file has 0 bytes")]
    manifest = pd.DataFrame(rows + [dict(image_id=_image_id(p), path=p, abspath=str(source / p).encode(), user=None, board=None,
                                         pin=None, category="art", status=s, reason_detail=d, sha256=None, width=None,
                                         height=None) for p, s, d in bad])
    sample = manifest[manifest["status"] == "ok"]
    write_parquet(run / "dataset" / "manifest.parquet", manifest)
    write_parquet(run / "dataset" / "sample.parquet", sample)
    counts = sample["category"].value_counts().sort_index()
    # the dataset stage's format, largest first; a category with too few images is left out of the sample
    (run / "dataset" / "distribution.csv").write_text("category,count,found,sampled\n" + "".join(
        f"{c},{n},{n},{n}\n" for c, n in counts.sort_values(ascending=False).items()) + f"{LEFT_OUT},2,2,0\n")
    write_json(run / "dataset" / "dataset.json", {
        "tool": "pintopic", "version": "0.1.0", "layout": "folders", "seed": 0,
        "arguments": {"source": str(source), "layout": "auto", "exclude": ["none", "other"], "per_category": 1000,
                      "min_per_category": 3, "seed": 0},
        "counts": {"found": len(manifest), "ok": len(sample), "sampled": len(sample),
                   "by_status": {"ok": len(sample), "truncated": 1, "empty": 1, "duplicate": 0},
                   "by_category": counts.to_dict()},
        "sample": {"rows": len(sample), "categories": sorted(CANONICAL), "left_out": {LEFT_OUT: 2}}})
    for key, spec, timing in ((BEST_KEY, "efficientnet_lite0", {"seconds": len(sample) / 41.5, "images_per_second": 41.5}),
                              (OTHER_KEY, "convnext_tiny", {})):  # the second store records no timing
        write_json(run / "features" / key / "meta.json", {
            "spec": spec, "key": key, "model": f"timm/{spec}", "dim": 1280, "n_rows": len(sample), "runtime": "torch",
            "device": "cpu", "failed": [], "versions": {"torch": "2.14.1", "timm": "1.0.31"}, **timing})
    (run / "config.resolved.toml").write_text('[dataset]\nsource = "source"\nper_category = 1000\n')
    write_json(run / "run.json", {"summary": {}, "outputs": "0f" * 8, "seconds": {"ingest": 3.2, "extract": 20.8, "evaluate": 7.1}})
    if with_results:
        _write_results(run, sample, rng)
    return run


def _write_results(run: Path, sample: pd.DataFrame, rng) -> None:
    categories = sorted(CANONICAL)
    truth = sample[["image_id", "category"]].rename(columns={"category": "true"}).reset_index(drop=True)
    # every third prediction is wrong, shifted to the next category
    shifted = {c: categories[(i + 1) % len(categories)] for i, c in enumerate(categories)}
    truth["pred"] = [shifted[t] if i % 3 == 0 else t for i, t in enumerate(truth["true"])]
    truth["correct"] = truth["pred"] == truth["true"]
    truth["top1"], truth["score1"] = truth["pred"], 0.61
    truth["top2"], truth["score2"] = [shifted[p] for p in truth["pred"]], 0.22
    results_rows = []
    for key, backbone in ((BEST_KEY, "efficientnet_lite0"), (OTHER_KEY, "convnext_tiny")):
        for classifier in CLASSIFIERS:
            best = key == BEST_KEY and classifier == "lsvm"
            cv = 0.40 if best else float(rng.uniform(0.1, 0.3))
            per_category = {c: {"precision": 0.5, "recall": 0.5, "f1": float(rng.uniform(0, 0.9)), "support": 3}
                            for c in categories}
            results_rows.append({
                "backbone": backbone, "key": key, "classifier": classifier, "best_params": {"C": 0.1},
                "cv_f1_macro": cv, "cv_results": [{"params": {"C": 0.1}, "mean_f1_macro": cv, "std_f1_macro": 0.021},
                                                  {"params": {"C": 1.0}, "mean_f1_macro": cv - 0.01, "std_f1_macro": 0.5}],
                "test_f1_macro": 0.30 if best else (0.33 if classifier == "knn" and key == OTHER_KEY else float(rng.uniform(0.1, 0.25))),
                "test_accuracy": 0.31, "fit_seconds": float(rng.uniform(1, 20)), "n_train": 300, "n_test": len(truth),
                "per_category": per_category})
    write_json(run / "results" / "results.json", {
        "rows": results_rows, "split": {"test_size": 0.2, "stratified": True}, "seed": 0,
        "categories": categories, "chance_f1": 1 / 32})
    name = f"{BEST_KEY}__lsvm"
    write_parquet(run / "results" / "predictions" / f"{name}.parquet", truth)
    confusion = pd.crosstab(truth["true"], truth["pred"]).reindex(index=categories, columns=categories, fill_value=0)
    (run / "results" / "confusion").mkdir()
    confusion.rename_axis("true\\predicted").to_csv(run / "results" / "confusion" / f"{name}.csv")


class _Page(HTMLParser):
    """Collects what the tests look at: ids, images, links, thumbnail classes, text."""

    def __init__(self):
        super().__init__()
        self.ids, self.images, self.links, self.thumb_classes, self.text = set(), [], [], [], []
        self.tags = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images.append(attrs)
        for name in ("src", "href", "srcset", "action", "data"):
            if attrs.get(name):
                self.links.append(attrs[name])
        if tag == "figure" and "thumb" in (attrs.get("class") or ""):
            self.thumb_classes.append(attrs["class"])

    def handle_data(self, data):
        self.text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.text = " ".join(page.text)
    return page


def _decode(uri: str):
    from PIL import Image

    match = re.fullmatch(r"data:(image/(?:png|jpeg));base64,([A-Za-z0-9+/=]+)", uri)
    assert match, uri[:60]
    image = Image.open(io.BytesIO(base64.b64decode(match.group(2))))
    image.load()
    assert image.format == {"image/png": "PNG", "image/jpeg": "JPEG"}[match.group(1)]
    return image


@pytest.fixture(scope="module")
def built_report(tmp_path_factory):
    from pintopic.report import build_report

    run = make_fake_run(tmp_path_factory.mktemp("report"))
    return run, build_report(run)


@pytest.mark.timeout(180)
def test_report_has_every_section_and_figure(built_report):
    run, report = built_report
    assert report == run / "report.html"
    page = _parse(report)
    for section in ("dataset", "results", "best-model", "thumbnails", "timings", "environment"):
        assert section in page.ids, section
    for figure in ("fig-distribution", "fig-per-category", "fig-confusion"):
        assert figure in page.ids, figure
    for table in ("status-table", "results-table", "confused-pairs", "extraction-table", "fit-table", "stage-table",
                  "versions-table", "resolved-config", "thumbnail-grid"):
        assert table in page.ids, table
    assert "missing" not in page.ids  # a complete run is not called partial

    charts = [_decode(img["src"]) for img in page.images if img["src"].startswith("data:image/png")]
    assert len(charts) == 3
    for chart in charts:  # sized by 32 categories: tall enough for one legible row each
        assert chart.height >= 32 * 0.26 * 100 and chart.width >= 400
        assert len(np.unique(np.asarray(chart.convert("RGB")).reshape(-1, 3), axis=0)) > 20  # drawn, not blank
    thumbs = [_decode(img["src"]) for img in page.images if img["src"].startswith("data:image/jpeg")]
    # 31 categories x 3 test images + at most 8 of the 11 in MANY
    assert len(thumbs) == 31 * 3 + 8
    assert all(max(t.size) <= 128 and min(t.size) >= 40 for t in thumbs)
    assert all(img.get("alt") for img in page.images)


def test_distribution_chart_is_the_dataset_stages_own(built_report):
    from pintopic.dataset.distribution import distribution_png

    run, report = built_report
    html = report.read_text(encoding="utf-8")
    uri = re.search(r'<figure class="chart" id="fig-distribution"><img alt="[^"]*" src="([^"]+)"', html).group(1)
    counts = pd.read_csv(run / "dataset" / "distribution.csv").set_index("category")["count"].to_dict()
    assert base64.b64decode(uri.split(",", 1)[1]) == distribution_png(counts, left_out=[LEFT_OUT], min_per_category=3)


def test_stored_distribution_png_is_embedded_as_is(tmp_path):
    from pintopic.report import build_report
    from pintopic.report.figures import horizontal_bars, to_png

    run = make_fake_run(tmp_path, with_results=False)
    stored = to_png(horizontal_bars({"a": 3, "b": 1}, xlabel="images", title="stored by ingest"))
    (run / "dataset" / "distribution.png").write_bytes(stored)
    html = build_report(run).read_text(encoding="utf-8")
    uri = re.search(r'<figure class="chart" id="fig-distribution"><img alt="[^"]*" src="([^"]+)"', html).group(1)
    assert base64.b64decode(uri.split(",", 1)[1]) == stored


def test_report_is_self_contained(built_report):
    _, report = built_report
    text = report.read_text(encoding="utf-8")
    page = _parse(report)
    for link in page.links:
        assert link.startswith(("data:", "#")), link[:80]
    assert not re.search(r"url\(\s*['\"]?(?!data:)", text)
    assert "@import" not in text and "<link" not in text
    assert "script" not in page.tags
    assert not re.search(r"(src|href)\s*=\s*['\"]?\s*(https?:)?//", text)


def test_report_headline_results_and_mistakes(built_report):
    run, report = built_report
    page = _parse(report)
    text = page.text
    # the headline is the test score of the model chosen by cross-validation (0.30), not the best test score (0.33)
    assert re.search(r"0\.300\s+test macro-F1 · efficientnet_lite0 × lsvm \(best by CV\)", text)
    assert "9.6×" in text  # 0.30 / (1/32)
    assert "+0.185" in text  # vs the study's 0.115
    html = report.read_text(encoding="utf-8")
    assert 'class="cell best"' in html and "CV 0.400 ± 0.021" in text and "C=0.1" in text
    assert "outlined" in text.lower() and "average" in text
    predictions = pd.read_parquet(run / "results" / "predictions" / f"{BEST_KEY}__lsvm.parquet")
    shown = predictions.sort_values(["true", "image_id"]).groupby("true").head(8)
    n_wrong = int((shown["true"] != shown["pred"]).sum())
    assert sum("wrong" in c for c in page.thumb_classes) == n_wrong > 0
    assert sum("right" in c for c in page.thumb_classes) == len(shown) - n_wrong
    assert re.search(rf"predicted\s+{display_name('architecture')}", text)  # animals mistaken for the next category
    # the most confused pair: each category's wrong third goes to the next category; animals has the most
    first_pair = re.search(r"<table id=\"confused-pairs\">.*?<tbody><tr><td>([^<]+)</td><td>([^<]+)</td>", html).groups()
    assert first_pair == (display_name("animals"), display_name("architecture"))
    assert "truncated" in text and "decoding failed" in text  # unusable files are listed with reasons
    statuses = re.findall(r"<tr><td>(\w+)</td>", re.search(r'<table id="status-table">.*?</table>', html).group(0))
    assert statuses == ["ok", "empty", "truncated"]  # statuses with no files are left out
    assert f"{LEFT_OUT} (2)" in text and "none, other" in text


def test_timings_per_stage_and_extraction_rate(built_report):
    _, report = built_report
    html = report.read_text(encoding="utf-8")
    stages = re.search(r'<table id="stage-table">.*?</table>', html).group(0)
    assert re.findall(r"<tr><td>(\w+)</td>", stages) == ["ingest", "extract", "evaluate"]  # pipeline order
    extraction = re.search(r'<table id="extraction-table">.*?</table>', html).group(0)
    assert "41.5" in extraction and "torch on cpu" in extraction
    assert "208 images in 20.8 s = 10.0 images/s"  # two stores of 104 in _parse(report).text


def test_rerun_leaves_report_untouched(built_report):
    from pintopic.report import build_report

    run, report = built_report
    before = report.stat().st_mtime_ns, report.read_bytes()
    assert build_report(run) == report
    assert (report.stat().st_mtime_ns, report.read_bytes()) == before


@pytest.mark.timeout(120)
def test_changed_inputs_rebuild_the_report(tmp_path):
    from pintopic.report import build_report

    run = make_fake_run(tmp_path, with_results=False)
    report = build_report(run)
    assert "99.9" not in _parse(report).text
    write_json(run / "run.json", {"seconds": {"ingest": 99.9}})
    assert "99.9" in _parse(build_report(run)).text


@pytest.mark.timeout(120)
def test_partial_runs_build_and_say_what_is_missing(tmp_path):
    from pintopic.report import build_report

    empty = tmp_path / "empty"
    empty.mkdir()
    page = _parse(build_report(empty))
    assert "missing" in page.ids
    for stage in ("pintopic ingest", "pintopic extract", "pintopic evaluate"):
        assert stage in page.text
    assert not page.images

    run = make_fake_run(tmp_path / "no-results", with_results=False)
    page = _parse(build_report(run))
    assert "results (run `pintopic evaluate RUN`)" in page.text and "fig-distribution" in page.ids
    assert "No test predictions yet" in page.text
    assert len([img for img in page.images if img["src"].startswith("data:image/jpeg")]) == 31 * 3 + 8


def test_missing_run_folder_is_a_clear_error(tmp_path, capsys):
    from pintopic.cli import main

    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_unreadable_images_get_a_placeholder_not_a_crash(tmp_path):
    from pintopic.report import build_report

    run = make_fake_run(tmp_path, with_results=False)
    (tmp_path / "source" / "art" / "img_0.png").unlink()
    (tmp_path / "source" / "art" / "img_1.png").write_bytes(b"")
    page = _parse(build_report(run))
    assert "cannot show: missing_image" in page.text and "cannot show: empty" in page.text
    assert len([img for img in page.images if img["src"].startswith("data:image/jpeg")]) == 31 * 3 + 8 - 2


def test_damaged_results_are_reported_not_fatal(tmp_path):
    from pintopic.report import build_report

    run = make_fake_run(tmp_path, with_results=False)
    (run / "results").mkdir()
    (run / "results" / "results.json").write_text("{not json")
    page = _parse(build_report(run))
    assert "results/results.json could not be read" in page.text


def test_cli_report_command(built_report, capsys):
    from pintopic.cli import main

    run, report = built_report
    assert main(["report", str(run)]) == 0
    assert str(report) in capsys.readouterr().out


def test_best_row_is_chosen_by_cross_validation():
    from pintopic.report.build import best_row

    rows = [{"backbone": "a", "classifier": "x", "cv_f1_macro": 0.2, "test_f1_macro": 0.9},
            {"backbone": "b", "classifier": "y", "cv_f1_macro": 0.3, "test_f1_macro": 0.1},
            {"backbone": "c", "classifier": "z", "cv_f1_macro": None, "test_f1_macro": 0.95}]
    assert best_row(rows)["backbone"] == "b"
    assert best_row([{"backbone": "c", "classifier": "z", "cv_f1_macro": None, "test_f1_macro": 0.5}])["backbone"] == "c"
    assert best_row([]) is None


def test_most_confused_pairs_skip_the_diagonal():
    from pintopic.report.build import most_confused_pairs

    confusion = pd.DataFrame([[9, 1, 0], [4, 5, 1], [0, 0, 10]], index=list("abc"), columns=list("abc"))
    assert most_confused_pairs(confusion) == [("b", "a", 4, 0.4), ("a", "b", 1, 0.1), ("b", "c", 1, 0.1)]


def _overlaps(labels) -> list[tuple[str, str]]:
    boxes = [(label.get_text(), label.get_window_extent()) for label in labels if label.get_text()]
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:] if box_a.overlaps(box_b)]


@pytest.mark.timeout(120)
def test_figures_keep_32_category_names_apart():
    from pintopic.report import figures

    labels = {c: display_name(c) for c in CANONICAL}
    per_category = {c: {"f1": i / 40} for i, c in enumerate(CANONICAL)}
    bars = figures.per_category_f1_figure(per_category, title="t", chance=1 / 32, labels=labels)
    matrix = np.random.default_rng(0).integers(0, 20, (32, 32))
    confusion = figures.confusion_figure(matrix, list(CANONICAL), title="t", labels=labels)
    for figure in (bars, confusion):
        figure.draw_without_rendering()  # runs the constrained layout, as saving does
        axes = figure.axes[0]
        assert len(axes.get_yticklabels()) == 32
        assert _overlaps(axes.get_yticklabels()) == []
        figure_box = figure.bbox
        for label in axes.get_yticklabels() + axes.get_xticklabels():  # nothing cut off at the edges
            box = label.get_window_extent()
            assert box.x0 >= figure_box.x0 - 1 and box.y0 >= figure_box.y0 - 1, label.get_text()
    assert _overlaps(confusion.axes[0].get_xticklabels()) == []
    assert [t.get_text() for t in bars.axes[0].get_yticklabels()][0] == display_name(CANONICAL[-1])  # sorted, best on top


def test_score_colours_keep_text_readable():
    from pintopic.report.figures import score_colors

    low_background, low_ink = score_colors(0.0, 0.0, 1.0)
    high_background, high_ink = score_colors(1.0, 0.0, 1.0)
    assert low_background != high_background
    assert (low_ink, high_ink) == ("#ffffff", "#000000")  # cividis runs dark blue → light yellow
