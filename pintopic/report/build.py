"""Assemble RUN/report.html from whatever the run folder holds: dataset, results, best model, thumbnails, timings."""
from __future__ import annotations

import math
import os
import re
from html import escape
from pathlib import Path

from pintopic import __version__
from pintopic.categories import display_name
from pintopic.environment import library_versions, machine
from pintopic.errors import PintopicError
from pintopic.report import figures
from pintopic.report.collect import (
    RunContents,
    collect,
    dataset_arguments,
    dataset_categories,
    decode_cache_of,
    model_name,
    pretty_json,
)
from pintopic.report.html import figure_html, key_values_html, page_html, table_html
from pintopic.report.noise import noise_sections
from pintopic.runio import RunLock, run_paths, settings_hash, write_if_changed
from pintopic.safeio import open_regular

#: The study's best macro-F1 (ConvNext_B features + KNN, Table 4.1), the number to beat.
STUDY_BEST_F1 = 0.115
STUDY_BEST_LABEL = "ConvNext_B + KNN"
MOST_CONFUSED_PAIRS = 12


def build_report(run_dir: str | os.PathLike) -> Path:
    """Write RUN/report.html (self-contained: inline CSS, images as data: URIs) and return its path.

    Builds from whatever stages have finished and says which are missing. A rerun on unchanged
    inputs leaves the file untouched.
    """
    if not Path(run_dir).is_dir():
        raise PintopicError(f"run folder {run_dir} does not exist; run `pintopic ingest SOURCE {run_dir}` first")
    with RunLock(run_dir):  # every writer into a run folder holds its lock
        return _write_report(run_dir)


def _write_report(run_dir: str | os.PathLike) -> Path:
    report_path = run_paths(run_dir)["report"]
    fingerprint = inputs_fingerprint(run_dir)
    if _recorded_fingerprint(report_path) == fingerprint:
        return report_path
    contents = collect(run_dir)
    best = best_row(contents.results["rows"]) if contents.results else None
    sections = [
        ("dataset", "Dataset", _dataset_section(contents)),
        ("results", "Results", _results_section(contents, best)),
        ("best-model", "Best model", _best_model_section(contents, best)),
        ("thumbnails", "Test images", _thumbnails_section(contents, best)),
        *noise_sections(contents),
        ("timings", "Timings", _timings_section(contents)),
        ("environment", "Configuration & environment", _environment_section(contents)),
    ]
    notice = ""
    if contents.missing or contents.problems:
        items = [f"<li>not there yet: {escape(item)}</li>" for item in contents.missing]
        items += [f"<li>{escape(problem)}</li>" for problem in contents.problems]
        notice = f'<div class="missing" id="missing"><b>This report is partial.</b><ul>{"".join(items)}</ul></div>'
    title = f"pintopic report: {contents.run_dir.resolve().name}"
    footer = f"pintopic {escape(__version__)} · self-contained report: every image is embedded, it needs no network."
    document = page_html(title, _header_html(contents, best, title), sections, notice=notice, footer=footer,
                         meta={FINGERPRINT_META: fingerprint})
    write_if_changed(report_path, document.encode("utf-8"))
    return report_path


FINGERPRINT_META = "pintopic-inputs"
_INPUT_PATTERNS = ("dataset/*", "features/*/meta.json", "results/*.json", "results/*.parquet", "results/confusion/*.csv",
                   "results/predictions/*.parquet", "config.resolved.toml", "run.json")


def inputs_fingerprint(run_dir: str | os.PathLike) -> str:
    """A digest of what the report is made from (run files' names, sizes, mtimes; the report code; library versions)."""
    import hashlib

    run = Path(run_dir)
    entries = []
    for pattern in _INPUT_PATTERNS:
        for path in sorted(run.glob(pattern)):
            if path.is_file() and not path.name.startswith("."):
                stat = path.stat()
                entries.append((str(path.relative_to(run)), stat.st_size, stat.st_mtime_ns))
    code = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        code.update(source.read_bytes())
    return settings_hash({"inputs": entries, "code": code.hexdigest(), "version": __version__,
                          "libraries": library_versions()}, length=16)


def _recorded_fingerprint(report_path: Path) -> str | None:
    """The inputs fingerprint stored in an existing report's head, if any."""
    try:
        with open_regular(report_path) as handle:
            head = handle.read(4096).decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    match = re.search(rf'<meta name="{FINGERPRINT_META}" content="([0-9a-f]+)">', head)
    return match.group(1) if match else None


def best_row(rows: list[dict]) -> dict | None:
    """The backbone × classifier with the best cross-validation macro-F1 (the honest pick: test data unseen)."""
    scored = [row for row in rows if _number(row.get("cv_f1_macro")) is not None]
    if not scored:
        scored = [row for row in rows if _number(row.get("test_f1_macro")) is not None]
        key = "test_f1_macro"
    else:
        key = "cv_f1_macro"
    if not scored:
        return None
    return min(scored, key=lambda row: (-_number(row.get(key)), str(row.get("backbone")), str(row.get("classifier"))))


def chance_f1(contents: RunContents) -> float | None:
    """Macro-F1 of guessing: from results.json, else 1 / number of categories."""
    results = contents.results or {}
    if _number(results.get("chance_f1")) is not None:
        return float(results["chance_f1"])
    categories = results.get("categories") or dataset_categories(contents.dataset)
    return 1.0 / len(categories) if categories else None


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _model_label(row: dict) -> str:
    return f"{row.get('backbone')} × {row.get('classifier')}"


def _header_html(contents: RunContents, best: dict | None, title: str) -> str:
    stats = []
    chance = chance_f1(contents)
    if best is not None and _number(best.get("test_f1_macro")) is not None:
        score = float(best["test_f1_macro"])
        stats.append(("main", f"{score:.3f}", f"test macro-F1 · {_model_label(best)} (best by CV)"))
        if chance:
            stats.append(("", f"{score / chance:.1f}×", f"chance level ({chance:.3f})"))
        stats.append(("", f"{score - STUDY_BEST_F1:+.3f}", f"vs the study's {STUDY_BEST_F1} ({STUDY_BEST_LABEL}, 32 Pinterest categories)"))
    else:
        stats.append(("main", "–", "no results yet"))
    dataset = contents.dataset or {}
    counts = dataset.get("counts") or {}
    if contents.sample is not None:
        stats.append(("", f"{len(contents.sample):,}", "images sampled"))
    elif counts.get("found") is not None:
        stats.append(("", f"{int(counts['found']):,}", "files found"))
    categories = (contents.results or {}).get("categories") or dataset_categories(dataset)
    if categories:
        stats.append(("", str(len(categories)), "categories"))
    cards = "".join(f'<div class="stat {kind}"><div class="value">{escape(value)}</div><div class="label">{escape(label)}</div></div>'
                    for kind, value, label in stats)
    source = dataset.get("source") or dataset_arguments(dataset).get("source")
    sub = f"source: {escape(str(source))} · " if source else ""
    sub += f"run folder: {escape(str(contents.run_dir))}"
    return f'<header class="top"><h1>{escape(title)}</h1><div class="sub">{sub}</div><div class="headline">{cards}</div></header>'


def _missing(what: str) -> str:
    return f'<p class="note">{escape(what)}</p>'


def _dataset_section(contents: RunContents) -> str:
    dataset = contents.dataset
    if dataset is None and contents.manifest is None:
        return _missing("No dataset yet: run `pintopic ingest SOURCE RUN`.")
    dataset = dataset or {}
    counts = dataset.get("counts") or {}
    by_status = {status: int(n) for status, n in (counts.get("by_status") or {}).items() if n}
    if not by_status and contents.manifest is not None:
        by_status = contents.manifest["status"].value_counts().to_dict()
    found = counts.get("found", sum((by_status or {}).values()) or None)
    args = dataset_arguments(dataset)
    facts = [("source", dataset.get("source") or args.get("source")), ("layout", dataset.get("layout") or args.get("layout")),
             ("files found", found), ("usable (ok)", (by_status or {}).get("ok")),
             ("sampled", len(contents.sample) if contents.sample is not None else None),
             ("categories sampled", len(dataset_categories(dataset)) or None),
             ("per category", args.get("per_category")), ("at least per category", args.get("min_per_category")),
             ("excluded categories", ", ".join(args.get("exclude") or []) or None),
             ("left out (too few ok images)", _left_out_text(contents)),
             ("seed", dataset.get("seed", args.get("seed"))),
             ("pintopic version", dataset.get("version"))]
    parts = ['<div class="split"><div>', "<h3>Files</h3>", key_values_html((k, v) for k, v in facts if v is not None)]
    if by_status:
        total = sum(by_status.values()) or 1
        rows = sorted(by_status.items(), key=lambda item: (-item[1], item[0]))
        parts += ["<h3>By status</h3>",
                  table_html(("status", "files", "share"), [(s, int(n), f"{100 * n / total:.1f}%") for s, n in rows],
                             numeric=(1, 2), table_id="status-table")]
        parts.append(_status_examples(contents))
    parts.append("</div><div>")
    png = _distribution_png(contents)
    if png is not None:
        parts.append(figure_html(png, "Images per category", "Usable images per category (the study's Figure 3.3).",
                                 figure_id="fig-distribution"))
    else:
        parts.append(_missing("No category distribution (dataset/distribution.csv) yet."))
    parts.append("</div></div>")
    return "".join(parts)


def _left_out_text(contents: RunContents) -> str | None:
    left_out = contents.distribution_left_out or sorted(((contents.dataset or {}).get("sample") or {}).get("left_out") or [])
    counts = contents.distribution or {}
    return ", ".join(f"{c} ({counts[c]:,})" if c in counts else c for c in left_out) or None


def _status_examples(contents: RunContents) -> str:
    """A few example files per unusable status, with the reason, so problems can be looked up."""
    manifest = contents.manifest
    if manifest is None or "status" not in manifest.columns:
        return ""
    bad = manifest[manifest["status"] != "ok"]
    if bad.empty:
        return ""
    rows = []
    for status, group in bad.groupby("status", sort=True):
        for _, row in group.head(5).iterrows():
            rows.append((status, row.get("path"), row.get("reason_detail")))
    return f"<details><summary>Examples of unusable files</summary>{table_html(('status', 'path', 'reason'), rows)}</details>"


def _distribution_png(contents: RunContents) -> bytes | None:
    """The dataset stage's chart: its stored PNG, or drawn again by the same function from distribution.csv."""
    if contents.distribution_png:
        return contents.distribution_png
    if contents.distribution:
        from pintopic.dataset.distribution import distribution_png

        return distribution_png(contents.distribution, left_out=contents.distribution_left_out,
                                min_per_category=dataset_arguments(contents.dataset).get("min_per_category"))
    return None


def _params_text(params) -> str:
    if not params:
        return ""
    if not isinstance(params, dict):
        return str(params)
    return ", ".join(f"{str(key).rsplit('__', 1)[-1]}={value}" for key, value in sorted(params.items()))


def _results_section(contents: RunContents, best: dict | None) -> str:
    if contents.results is None:
        return _missing("No results yet: run `pintopic evaluate RUN`.")
    from pintopic.classify.tables import AVERAGE, results_table, row_key

    rows = contents.results["rows"]
    backbones, classifiers, means = results_table(rows)
    spec_of = {row_key(row): str(row.get("backbone")) for row in rows}
    cell = {(row_key(row), str(row.get("classifier"))): row for row in rows}

    def test_score(backbone, classifier):
        row = cell.get((backbone, classifier))
        return _number(row.get("test_f1_macro")) if row else None

    row_means = {b: _number(means[(b, AVERAGE)]) for b in backbones}
    column_means = {c: _number(means[(AVERAGE, c)]) for c in classifiers}
    every = [v for v in [test_score(b, c) for b in backbones for c in classifiers] if v is not None]
    low, high = (min(every), max(every)) if every else (0.0, 1.0)
    best_cell = max(every) if every else None

    def colored(value, inner, extra_class=""):
        if value is None:
            return f'<td class="cell {extra_class}">–</td>'
        background, ink = figures.score_colors(value, low, high)
        return f'<td class="cell {extra_class}" style="background:{background};color:{ink}">{inner}</td>'

    head = "".join(f"<th>{escape(c)}</th>" for c in classifiers)
    body = []
    for backbone in backbones:
        cells = []
        for classifier in classifiers:
            row = cell.get((backbone, classifier))
            score = test_score(backbone, classifier)
            if row is None:
                cells.append('<td class="cell">–</td>')
                continue
            cv = _number(row.get("cv_f1_macro"))
            spread = cv_std(row)
            weight = "<b>" if score is not None and score == best_cell else ""
            inner = (f'<div class="score">{weight}{_fmt(score)}{"</b>" if weight else ""}</div>'
                     f'<div class="cv">CV {_fmt(cv)}{f" ± {spread:.3f}" if spread is not None else ""}</div>'
                     f'<div class="params">{escape(_params_text(row.get("best_params")))}</div>')
            cells.append(colored(score, inner, "best" if row is best else ""))
        cells.append(colored(row_means[backbone], f'<div class="score">{_fmt(row_means[backbone])}</div>', "avg"))
        key_note = f'<div class="muted">{escape(backbone)}</div>' if spec_of[backbone] != backbone else ""
        body.append(f"<tr><th>{escape(spec_of[backbone])}{key_note}</th>{''.join(cells)}</tr>")
    average_cells = "".join(colored(column_means[c], f'<div class="score">{_fmt(column_means[c])}</div>') for c in classifiers)
    body.append(f"<tr><th>average</th>{average_cells}<td class=\"cell avg\"></td></tr>")
    table = (f'<div class="scroll"><table class="heat" id="results-table"><thead><tr><th>features \\ classifier</th>{head}'
             f'<th class="avg">average</th></tr></thead><tbody>{"".join(body)}</tbody></table></div>')
    chance = chance_f1(contents)
    split = contents.results.get("split") or {}
    notes = [f"Test macro-F1 of every backbone × classifier, laid out like the study's Table 4.1 (rows: features, "
             f"columns: classifiers, with averages). Colour: test macro-F1 (cividis). Under each score: the mean "
             f"cross-validation macro-F1 on the training part (± its standard deviation over the folds) and the hyper-parameters it chose. Outlined: the best "
             f"by cross-validation, shown in detail below. The study's best was {STUDY_BEST_F1} ({STUDY_BEST_LABEL})."]
    if chance:
        notes.append(f"Chance level (macro-F1 of guessing): {chance:.3f}.")
    facts = [(str(k), v if not isinstance(v, (dict, list)) else pretty_json(v)) for k, v in split.items()]
    if contents.results.get("seed") is not None and "seed" not in split:
        facts.append(("seed", contents.results["seed"]))
    split_html = f"<h3>Split</h3>{key_values_html(facts)}" if facts else ""
    return f'{table}<p class="note">{" ".join(escape(n) for n in notes)}</p>{split_html}'


def cv_std(row: dict) -> float | None:
    """Standard deviation over the folds of the chosen hyper-parameters' CV macro-F1, when recorded."""
    for entry in row.get("cv_results") or []:
        if entry.get("params") == row.get("best_params"):
            return _number(entry.get("std_f1_macro"))
    return None


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _confusion_frame(contents: RunContents, best: dict):
    """The best model's confusion matrix (rows true, columns predicted), from its CSV or its predictions."""
    import pandas as pd

    name = model_name(best)
    if name in contents.confusion:
        frame = contents.confusion[name]
        frame.index = frame.index.astype(str)
        frame.columns = frame.columns.astype(str)
        return frame
    predictions = contents.predictions.get(name)
    if predictions is None:
        return None
    categories = sorted(set(predictions["true"].astype(str)) | set(predictions["pred"].astype(str)))
    frame = pd.crosstab(predictions["true"].astype(str), predictions["pred"].astype(str))
    return frame.reindex(index=categories, columns=categories, fill_value=0)


def most_confused_pairs(confusion, limit: int = MOST_CONFUSED_PAIRS) -> list[tuple[str, str, int, float]]:
    """Off-diagonal cells with the most test images: (true, predicted, count, share of the true category)."""
    pairs = []
    totals = confusion.sum(axis=1)
    for true in confusion.index:
        for pred in confusion.columns:
            count = int(confusion.at[true, pred])
            if true != pred and count > 0:
                pairs.append((true, pred, count, count / totals[true] if totals[true] else 0.0))
    pairs.sort(key=lambda pair: (-pair[2], -pair[3], pair[0], pair[1]))
    return pairs[:limit]


def _best_model_section(contents: RunContents, best: dict | None) -> str:
    if best is None:
        return _missing("No evaluated model yet.")
    labels = {c: display_name(c) for c in (contents.results.get("categories") or [])}
    title = _model_label(best)
    parts = ['<div class="split"><div>', key_values_html([
        ("model", title), ("cross-validation macro-F1", _number(best.get("cv_f1_macro"))),
        ("test macro-F1", _number(best.get("test_f1_macro"))), ("test accuracy", _number(best.get("test_accuracy"))),
        ("hyper-parameters", _params_text(best.get("best_params")) or None),
        ("train / test images", f"{best.get('n_train', '–')} / {best.get('n_test', '–')}"),
    ])]
    per_category = best.get("per_category") or {}
    labels.update({c: display_name(c) for c in per_category})
    confusion = _confusion_frame(contents, best)
    parts.append("<h3>Most confused categories</h3>")
    if confusion is not None and len(confusion):
        labels.update({c: display_name(c) for c in confusion.index})
        confusion = confusion.reindex(columns=list(confusion.index), fill_value=0)
        pairs = [(labels.get(t, t), labels.get(p, p), n, f"{100 * share:.0f}%") for t, p, n, share in most_confused_pairs(confusion)]
        parts.append(table_html(("true category", "predicted as", "test images", "share of true"), pairs,
                                numeric=(2, 3), table_id="confused-pairs") if pairs else _missing("No confusions."))
    else:
        parts.append(_missing("No confusion matrix (results/confusion/) or predictions for this model."))
    parts.append("</div><div>")
    if per_category:
        figure = figures.per_category_f1_figure(per_category, title="Per-category test F1",
                                                chance=chance_f1(contents), labels=labels)
        parts.append(figure_html(figures.to_png(figure), "Per-category F1", f"Test F1 per category of {title}, best "
                                 "first; dashed line: chance level.", figure_id="fig-per-category"))
    else:
        parts.append(_missing("No per-category scores in results.json."))
    parts.append("</div></div>")
    if confusion is not None and len(confusion):
        categories = list(confusion.index)
        figure = figures.confusion_figure(confusion.to_numpy(), categories, title=f"Confusion matrix: {title}", labels=labels)
        parts.append(figure_html(figures.to_png(figure), "Confusion matrix", "Each row is a true category, split by "
                                 "what the model predicted (share of that row).", figure_id="fig-confusion"))
    return "".join(parts)


def _thumbnails_section(contents: RunContents, best: dict | None) -> str:
    from pintopic.report.thumbnails import (
        PER_CATEGORY,
        THUMBNAIL_PIXELS,
        choose_thumbnails,
        thumbnail_grid_html,
    )

    images = contents.sample if contents.sample is not None else contents.manifest
    if images is None:
        return _missing("No images yet: run `pintopic ingest SOURCE RUN`.")
    images = images[["image_id", "abspath", "category", "sha256"]]
    predictions = contents.predictions.get(model_name(best)) if best is not None else None
    if predictions is not None:
        columns = ["image_id", "true", "pred"] + [c for c in predictions.columns if re.fullmatch(r"(top|score)\d+", c)]
        shown = predictions[columns].merge(images, on="image_id", how="inner", validate="one_to_one")
        intro = (f"Test images of {escape(_model_label(best))}: at most {PER_CATEGORY} per true category, first by "
                 f"image id. Captions give the predicted category.")
        lost = len(predictions) - len(shown)
        if lost:
            intro += f" {lost} predicted images are not in the dataset tables and are not shown."
        legend = ('<p class="legend"><span><i class="swatch" style="border-color:#009E73"></i>✓ right</span>'
                  '<span><i class="swatch" style="border-color:#D55E00;border-style:dashed"></i>✗ wrong</span></p>')
    else:
        shown = images.rename(columns={"category": "true"})
        intro = f"No test predictions yet; sampled images, at most {PER_CATEGORY} per category."
        legend = ""
    chosen = choose_thumbnails(shown)
    grid = thumbnail_grid_html(chosen, cache_folder=decode_cache_of(contents))
    return (f'<p class="note">{intro} Thumbnails at most {THUMBNAIL_PIXELS} px.</p>{legend}'
            f'<div id="thumbnail-grid">{grid}</div>')


#: Pipeline order for the per-stage timings (run.json stores them with sorted keys).
STAGE_ORDER = ("ingest", "extract", "evaluate", "report")


def stage_seconds(run_timings) -> dict[str, float]:
    """Seconds per stage from run.json (``seconds``, ``stages`` or ``timings``), in pipeline order."""
    if not isinstance(run_timings, dict):
        return {}
    stages = next((run_timings[key] for key in ("seconds", "stages", "timings") if isinstance(run_timings.get(key), dict)),
                  run_timings)
    numbers = {str(k): float(v) for k, v in stages.items() if _number(v) is not None}
    rank = {stage: i for i, stage in enumerate(STAGE_ORDER)}
    return dict(sorted(numbers.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


def _seconds(value) -> str:
    value = _number(value)
    return "–" if value is None else f"{value:,.1f}"


def _timings_section(contents: RunContents) -> str:
    stages = stage_seconds(contents.run_timings)
    parts = ["<h3>Feature extraction</h3>"]
    if contents.features:
        rows = []
        for meta in contents.features:
            seconds = _number(meta.get("seconds"))
            rate = _number(meta.get("images_per_second"))
            if rate is None and seconds and meta.get("n_rows"):
                rate = float(meta["n_rows"]) / seconds
            runtime = " on ".join(str(meta[k]) for k in ("runtime", "device") if meta.get(k))
            rows.append((meta.get("spec"), meta.get("model"), meta.get("folder"), meta.get("dim"), meta.get("n_rows"),
                         runtime or None, _seconds(seconds), _seconds(rate), len(meta.get("failed") or [])))
        parts.append(table_html(("backbone", "model", "store", "dim", "images", "runtime", "seconds", "images/s", "failed"),
                                rows, numeric=(3, 4, 6, 7, 8), table_id="extraction-table"))
        total_rows = sum(int(meta.get("n_rows") or 0) for meta in contents.features)
        if stages.get("extract") and total_rows:
            parts.append(f'<p class="note">Whole extract stage (run.json): {total_rows:,} images in '
                         f'{stages["extract"]:,.1f} s = {total_rows / stages["extract"]:,.1f} images/s.</p>')
    else:
        parts.append(_missing("No feature stores yet."))
    parts.append("<h3>Classifier fitting (search + refit)</h3>")
    if contents.results:
        rows = [(row.get("backbone"), row.get("classifier"), _seconds(row.get("fit_seconds")), row.get("n_train"),
                 row.get("n_test")) for row in contents.results["rows"]]
        parts.append(table_html(("backbone", "classifier", "fit seconds", "train", "test"), rows, numeric=(2, 3, 4),
                                table_id="fit-table"))
    else:
        parts.append(_missing("No results yet."))
    if stages:
        parts.append("<h3>Stages (last run that did work)</h3>")
        parts.append(table_html(("stage", "seconds"), [(k, _seconds(v)) for k, v in stages.items()], numeric=(1,),
                                table_id="stage-table"))
    return "".join(parts)


def _environment_section(contents: RunContents) -> str:
    parts = ['<div class="row2"><div><h3>Library versions (report build)</h3>']
    parts.append(table_html(("library", "version"), sorted(library_versions().items()), table_id="versions-table"))
    parts.append("</div><div><h3>Machine (report build)</h3>")
    parts.append(key_values_html(machine().items()))
    for meta in contents.features:
        recorded = {key: meta[key] for key in ("model", "pretrained", "weights_source", "weights_sha256", "preprocessing",
                                               "runtime", "device", "machine", "versions") if key in meta}
        if recorded:
            parts.append(f"<h3>Recorded by extraction: {escape(str(meta.get('spec') or meta.get('folder')))}</h3>"
                         f"<pre>{escape(pretty_json(recorded))}</pre>")
    parts.append("</div></div><h3>Resolved configuration</h3>")
    if contents.config_text:
        parts.append(f'<pre id="resolved-config">{escape(contents.config_text)}</pre>')
    else:
        parts.append(_missing("No config.resolved.toml in the run folder (stages were run one by one)."))
    if dataset_arguments(contents.dataset):
        parts.append(f"<details><summary>Ingest arguments</summary><pre>{escape(pretty_json(dataset_arguments(contents.dataset)))}"
                     "</pre></details>")
    return "".join(parts)
