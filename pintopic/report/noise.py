"""Report sections for noisy board labels: label issues and training through the noise, boards and users.

Shown only when the run has them (``evaluate --label-issues`` wrote ``results/noise.json``; ``pintopic
profile`` wrote ``results/profile.json``); otherwise these sections are left out, not reported missing.
"""
from __future__ import annotations

from html import escape

from pintopic.categories import display_name
from pintopic.classify.noise_stage import PROBABILITY_PREFIX
from pintopic.report import figures
from pintopic.report.collect import RunContents, decode_cache_of
from pintopic.report.html import figure_html, key_values_html, table_html

WORST_PER_CATEGORY = 6
BOARD_STRIPS = 4
PINS_PER_STRIP = 12
PROFILE_FIGURES = 2
BOARD_GOAL = 0.95


def noise_sections(contents: RunContents) -> list[tuple[str, str, str]]:
    """``(id, title, html)`` of the sections this run has material for."""
    sections = []
    if contents.noise:
        sections.append(("label-issues", "Label issues and training through the noise", _issues_section(contents)))
    if contents.boards is not None and contents.users is not None:
        sections.append(("boards-users", "Boards and users", _profile_section(contents)))
    return sections


def _score(value) -> str:
    return "–" if value is None else f"{float(value):.3f}"


def _issues_section(contents: RunContents) -> str:
    noise, flags = contents.noise, contents.noise.get("flags") or {}
    options = noise.get("options") or {}
    parts = ['<div class="split"><div>', key_values_html([
        ("features", noise.get("store")), ("method", noise.get("method")),
        ("pins flagged", f"{flags.get('flagged', 0):,} of {flags.get('n_pins', 0):,}"),
        *((f"flagged as {reason}", n) for reason, n in (flags.get("by_reason") or {}).items()),
        ("estimated off-theme share", _score(flags.get("estimated_off_theme"))),
        ("estimated wrongly filed boards", _score(flags.get("estimated_wrong_boards"))),
        ("chosen treatment (CV)", options.get("chosen")),
    ])]
    truth = flags.get("against_truth")
    if truth:
        parts.append("<h3>Flags against the truth file</h3>")
        parts.append(table_html(("method", "flagged", "precision", "recall", "F1"),
                                [(name, q["flagged"], _score(q["precision"]), _score(q["recall"]), _score(q["f1"]))
                                 for name, q in truth.items()], numeric=(1, 2, 3, 4), table_id="flag-quality"))
    parts.append("</div><div><h3>Treatments of flagged training pins</h3>")
    test = options.get("test") or {}
    rows = []
    for option, cv in (options.get("cv_f1_macro") or {}).items():
        scores = test.get(option) or {}
        rows.append((option + (" (chosen)" if option == options.get("chosen") else ""), _score(cv),
                     _score((scores.get("given") or {}).get("f1_macro")), _score((scores.get("true") or {}).get("f1_macro")),
                     _score((scores.get("true") or {}).get("accuracy"))))
    parts.append(table_html(("treatment", "CV macro-F1 (given)", "test macro-F1 (given)", "test macro-F1 (true)",
                             "test accuracy (true)"), rows, numeric=(1, 2, 3, 4), table_id="noise-options"))
    parts.append('<p class="note">CV on the training part only, scored on the held-out folds\' given labels; the test '
                 "part is never cleaned or relabelled. Test scores for the noisy baseline (none) and the chosen treatment; "
                 "true-label scores need a truth file (--truth).</p></div></div>")
    parts.append(_worst_pins_html(contents))
    return "".join(parts)


def _worst_pins_html(contents: RunContents) -> str:
    from pintopic.report.thumbnails import thumbnail_grid_html

    issues = contents.label_issues
    images = contents.sample if contents.sample is not None else contents.manifest
    if issues is None or not len(issues) or images is None:
        return '<p class="note">No flagged pins to show.</p>'
    worst = issues.sort_values(["score", "image_id"], ascending=[False, True]).groupby("given", sort=True).head(WORST_PER_CATEGORY)
    shown = worst.rename(columns={"given": "true", "suggested": "pred"})[["image_id", "true", "pred", "score"]].merge(
        images[["image_id", "abspath", "sha256"]], on="image_id", how="inner")
    grid = thumbnail_grid_html(shown, verb="suggested", cache_folder=decode_cache_of(contents))
    return (f"<h3>Worst pins per given category</h3><p class=\"note\">The {WORST_PER_CATEGORY} flagged pins per given "
            "category least likely to carry their label, with the suggested category.</p>"
            f'<div id="label-issue-grid">{grid}</div>')


def _profile_section(contents: RunContents) -> str:
    record, boards = contents.profile or {}, contents.boards
    truth = record.get("truth") or {}
    facts = [("boards", len(boards)), ("users", boards["user"].nunique()), ("board rule", record.get("board_rule")),
             ("user rule", record.get("user_rule")),
             ("boards whose predicted category differs from the given one",
              int((boards["predicted_category"] != boards["given_category"]).sum()))]
    if truth:
        board_truth, user_truth = truth.get("boards") or {}, truth.get("users") or {}
        facts += [(f"board accuracy ({board_truth.get('part')} boards, >= {record.get('min_board_pins')} pins)",
                   f"{_score(board_truth.get('accuracy'))} of {board_truth.get('evaluated')}"),
                  (f"mean JS divergence of user profiles (>= {record.get('min_user_pins')} pins)",
                   f"{_score(user_truth.get('mean_js_divergence'))} over {user_truth.get('evaluated')} users")]
        facts += [(f"the same under user rule {rule}", _score(scores.get("mean_js_divergence")))
                  for rule, scores in (truth.get("users_by_rule") or {}).items() if rule != record.get("user_rule")]
    parts = [key_values_html(facts)]
    curve = (truth.get("boards") or {}).get("curve")
    if curve:
        png = figures.to_png(figures.board_curve_figure({"this run": curve}, title="Board accuracy with fewer pins",
                                                        goal=BOARD_GOAL))
        parts.append(figure_html(png, "Board accuracy against pins per board", "Share of boards whose predicted category "
                                 "is their true one when each is seen through a random subset of its pins.",
                                 figure_id="fig-board-curve"))
    parts.append(_profiles_html(contents))
    parts.append(_board_strips_html(contents))
    return "".join(parts)


def _profiles_html(contents: RunContents) -> str:
    users = contents.users
    largest = users.groupby("user")["n_pins"].first().sort_values(ascending=False, kind="stable").index[:PROFILE_FIGURES]
    parts = ['<h3>Interest profiles</h3><div class="row2">']
    for user in largest:
        rows = users[users["user"] == user]
        rows = rows[rows["share"] > 0.005]
        figure = figures.profile_figure(dict(zip(rows["category"], rows["share"])), dict(zip(rows["category"], rows["low"])),
                                        dict(zip(rows["category"], rows["high"])), labels={c: display_name(c) for c in rows["category"]},
                                        title=f"{user}: {int(rows['n_pins'].iloc[0])} pins, {int(rows['n_boards'].iloc[0])} boards")
        parts.append(f"<div>{figure_html(figures.to_png(figure), f'Interest profile of {user}')}</div>")
    return "".join(parts) + "</div>"


def _board_strips_html(contents: RunContents) -> str:
    """The largest boards whose predicted category differs from the given one, then the largest agreeing one."""
    from pintopic.report.thumbnails import thumbnail_img_html

    boards, pins = contents.boards, contents.pin_probabilities
    cache_folder = decode_cache_of(contents)
    images = contents.sample if contents.sample is not None else contents.manifest
    if pins is None or images is None:
        return ""
    ordered = boards.sort_values(["n_pins", "user", "board"], ascending=[False, True, True], kind="stable")
    differ = ordered[ordered["predicted_category"] != ordered["given_category"]].head(BOARD_STRIPS - 1)
    chosen = list(differ.itertuples()) + list(ordered[ordered["predicted_category"] == ordered["given_category"]].head(1).itertuples())
    columns = [c for c in pins.columns if str(c).startswith(PROBABILITY_PREFIX)]
    parts = ["<h3>Boards</h3>"]
    for board in chosen:
        rows = pins[(pins["user"] == board.user) & (pins["board"] == board.board)].head(PINS_PER_STRIP)
        rows = rows.merge(images[["image_id", "abspath", "sha256"]], on="image_id", how="inner")
        cells = []
        for _, row in rows.iterrows():
            top = str(max(columns, key=lambda c: row[c]))[len(PROBABILITY_PREFIX):]
            cells.append(f'<figure class="thumb">{thumbnail_img_html(row, "pin of " + board.board, cache_folder)}'
                         f"<figcaption>{escape(display_name(top))}</figcaption></figure>")
        title = (f"{escape(board.user)} / {escape(board.board)}: given <b>{escape(display_name(str(board.given_category)))}"
                 f"</b>, predicted <b>{escape(display_name(str(board.predicted_category)))}</b> "
                 f'<span class="muted">{int(board.n_pins)} pins, confidence {float(board.confidence):.2f}</span>')
        parts.append(f'<div class="catblock"><div class="cat">{title}</div><div class="thumbs">{"".join(cells)}</div></div>')
    return "".join(parts)
