"""Scoring boards and user profiles against a crawl's truth file (the only reader of it in ``pintopic profile``).

A board's true category is the most common true category of its pins; a user's true profile is the share
of each true category over their pins. Board accuracy counts the test boards (those no model was trained
on; all boards when the input marks no part) with at least ``MIN_BOARD_PINS`` pins; the curve shows how it
falls when a board has fewer pins (random subsets, repeated). User profiles are compared by Jensen-Shannon
divergence (bits) for users with at least ``MIN_USER_PINS`` pins.
"""
from __future__ import annotations

import numpy as np

MIN_BOARD_PINS = 10
MIN_USER_PINS = 50
CURVE_PINS = (1, 2, 3, 5, 10, 20, 40)
CURVE_REPEATS = 20


def _board_truth(pins, names: np.ndarray) -> np.ndarray:
    """Per board (board_index order), the most common true category of its pins (ties: alphabetical)."""
    import pandas as pd

    frame = pd.DataFrame({"board_index": pins["board_index"].to_numpy(), "true": names})
    return frame.groupby("board_index", sort=True)["true"].agg(lambda v: v.value_counts().sort_index(kind="stable")
                                                               .sort_values(ascending=False, kind="stable").index[0]).to_numpy()


def board_accuracy_curve(probs, board_index, board_true, eligible, rule: str, categories, *, pin_counts,
                         repeats: int, seed: int, users=None, mixture=None, rows_per_call: int = 100_000) -> list[dict]:
    """Accuracy of ``rule`` on ``eligible`` boards when each is seen through ``n`` random pins, per ``n``
    (for ``mixture``, the owners' interests and the off-theme share stay those estimated on all pins, by
    ``mixture``, the pins' board posterior, when given). Every draw of ``n`` pins is named as a board of its
    own, up to ``rows_per_call`` pins in one call (the same numbers as one call per draw: with those settings
    fixed, boards share nothing)."""
    from pintopic.classify.boards import board_posterior

    if mixture is None:
        mixture = board_posterior(probs, board_index, users=users)
    context = {"prior": np.clip(probs, 1e-4, 1.0).mean(axis=0), "rho": mixture.interests, "off_theme": mixture.off_theme}
    rng = np.random.default_rng(seed)
    names = np.asarray(categories)
    members = {b: np.flatnonzero(board_index == b) for b in np.flatnonzero(eligible)}
    curve = []
    for n in pin_counts:
        boards = [b for b, rows in members.items() if len(rows) >= n]
        draws = [(b, rng.choice(members[b], size=n, replace=False))
                 for b in boards for _ in range(repeats if len(members[b]) > n else 1)]
        hits = _draw_hits(probs, draws, n, rule, names, board_true, context, rows_per_call)
        curve.append({"pins": int(n), "boards": len(boards), "accuracy": float(np.mean(hits)) if len(hits) else None})
    return curve


def _draw_hits(probs, draws: list, n: int, rule: str, names, board_true, context: dict, rows_per_call: int):
    """Per draw ``(board, its n pins)``, whether ``rule`` names the draw as its board's true category."""
    from pintopic.predict.aggregate import board_scores

    hits = []
    per_call = max(1, rows_per_call // n)
    for start in range(0, len(draws), per_call):
        part = draws[start:start + per_call]
        rows = np.concatenate([pins for _, pins in part])
        scores = board_scores(probs[rows], np.repeat(np.arange(len(part)), n), rule,
                              context={**context, "rho": context["rho"][rows]})
        hits.extend(names[scores.argmax(axis=1)] == board_true[[b for b, _ in part]])
    return hits


def score_against_truth(pins, probs, user_probs_by_rule: dict, user_rule: str, categories, boards, truth, *,
                        seed: int = 0, mixture=None) -> tuple[dict, np.ndarray]:
    """Board accuracy (with its curve over pins per board, from the pins' own probabilities ``probs``; ``mixture``:
    their board posterior, if already computed) and the divergence of user profiles (the mean per user of each
    rule's distributions in ``user_probs_by_rule``; in full for ``user_rule``) against ``truth``;
    ``(scores, each board's true category)``."""
    from pintopic.dataset.truth import read_truth, true_categories

    names = np.asarray(true_categories(pins, read_truth(truth)))
    board_true = _board_truth(pins, names)
    boards = boards.assign(true_category=board_true)
    tested = (boards["part"] == "test").to_numpy() if (boards["part"] == "test").any() else np.ones(len(boards), bool)
    large = (boards["n_pins"] >= MIN_BOARD_PINS).to_numpy()
    correct = (boards["predicted_category"] == boards["true_category"]).to_numpy()
    given_right = (boards["given_category"] == boards["true_category"]).to_numpy()
    rule = str(boards["rule"].iloc[0])
    users = pins["user"].astype(str).to_numpy()
    curve = board_accuracy_curve(probs, pins["board_index"].to_numpy(), board_true, tested, rule, categories,
                                 pin_counts=CURVE_PINS, repeats=CURVE_REPEATS, seed=seed, users=users, mixture=mixture)
    by_rule = {name: user_divergences(pins, names, distributions, categories)
               for name, distributions in user_probs_by_rule.items()}
    return {
        "boards": {"evaluated": int((tested & large).sum()), "accuracy": _mean(correct[tested & large]),
                   "accuracy_all_boards": _mean(correct[large]), "n_all_boards": int(large.sum()),
                   "given_label_accuracy": _mean(given_right[tested & large]), "curve": curve,
                   "part": "test" if (boards["part"] == "test").any() else "all"},
        "users": by_rule[user_rule],
        "users_by_rule": {name: {k: v for k, v in scores.items() if k != "per_user"} for name, scores in by_rule.items()},
    }, board_true


def user_divergences(pins, true_names: np.ndarray, user_probs: np.ndarray, categories) -> dict:
    """Jensen-Shannon divergence (bits) of each user's profile (the mean of ``user_probs`` over their pins) from the
    share of each true category over their pins, for users with at least ``MIN_USER_PINS`` pins; a true category
    the model does not know counts as one more category the profile gives nothing to."""
    from pintopic.predict.aggregate import js_divergence

    divergences = {}
    for user, group in pins.groupby("user", sort=True):
        if len(group) >= MIN_USER_PINS:
            own = true_names[group.index]
            true_share = np.array([(own == c).mean() for c in categories] + [(~np.isin(own, categories)).mean()])
            predicted = np.append(user_probs[group.index.to_numpy()].mean(axis=0), 0.0)
            divergences[str(user)] = js_divergence(predicted, true_share)
    values = list(divergences.values())
    return {"evaluated": len(values), "mean_js_divergence": _mean(values),
            "median_js_divergence": float(np.median(values)) if values else None,
            "max_js_divergence": float(max(values)) if values else None, "per_user": divergences}


def _mean(values) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()) if len(values) else None
