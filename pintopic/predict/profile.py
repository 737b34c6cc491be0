"""``pintopic profile``: from pin probabilities to a category per board and an interest profile per user.

Input: a run folder (``RUN/results/pin_probabilities.parquet``, written by ``evaluate --label-issues``: every
pin scored by a model that never saw its board) or a crawl-wide predictions parquet (``image_id``, ``user``,
``board``, ``pin`` and ``top1..k``/``score1..k``, or ``p:<category>`` columns).

- A board's category comes from its pins alone, by one of :data:`BOARD_RULES`: ``mean-log`` (argmax of the
  mean log-probability: the pins as independent evidence), ``mean`` (of the probabilities), ``vote`` (most
  frequent top category) or ``mixture`` (the board mixture of :mod:`pintopic.classify.boards`, which lets a
  share of pins be off-theme). ``auto`` picks the rule whose board categories agree best with the given
  ones on the training boards (or all boards when nothing was trained here).
- A user's interest profile is the share of each category over their pins: each pin counted once for its
  most likely category (classify and count) under its board-aware posterior, which knows its board-mates,
  its owner's other interests and the category the board is filed under, believed as far as boards are
  estimated to be filed right (``filed``, the default; the boards' given categories are part of a crawl);
  the same without the filed category (``counts``), the mean of those posteriors (``board``) or of the pins'
  own probabilities (``mean``); with a 95 % interval from a bootstrap over the user's boards (pins of one
  board are not independent; over pins for a one-board user). Board categories never read the filed ones.

Outputs (``RUN/results/`` or beside the predictions file): ``boards.parquet`` (``user``, ``board``,
``given_category``, ``predicted_category``, ``confidence``, ``n_pins``, ``part``), ``users.parquet`` (long:
``user``, ``category``, ``share``, ``low``, ``high``, ``n_pins``, ``n_boards``) and ``profile.json``. With a
truth file (``--truth``, read only here, to score) boards and users are scored against the true categories:
board accuracy (test boards with at least :data:`MIN_BOARD_PINS` pins), its curve over fewer pins per board,
and the Jensen-Shannon divergence of user profiles (users with at least :data:`MIN_USER_PINS` pins), under
the chosen user rule and every other one.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pintopic.classify.noise_stage import PROBABILITY_PREFIX
from pintopic.errors import PintopicError
from pintopic.predict.profile_scoring import MIN_BOARD_PINS, MIN_USER_PINS

BOARD_RULES = ("mean-log", "mean", "vote", "mixture")
USER_RULES = ("filed", "counts", "board", "mean")
BOOTSTRAP_RESAMPLES = 999
#: Probability a top-k list leaves to the categories it does not name is spread evenly; never below this.
FLOOR = 1e-4


def load_pins(source: str | os.PathLike):
    """``(pins, categories, out_dir)``: one row per pin (``image_id``, ``user``, ``board``, ``given`` or None,
    ``part``) with probability columns ``p:<category>``, and the folder the outputs go to."""

    source = Path(source)
    if source.is_dir():
        path = source / "results" / "pin_probabilities.parquet"
        if not path.exists():
            raise PintopicError(f"{path} not found; run `pintopic evaluate {source} --label-issues` first "
                                "(or give a predictions parquet)")
        out_dir = source / "results"
    elif source.is_file():
        path, out_dir = source, source.parent
    else:
        raise PintopicError(f"{source} is neither a run folder nor a predictions parquet")
    from pintopic.safeio import read_parquet_table

    pins = read_parquet_table(path)  # a pipe planted there must not block; a damaged file is one clear error
    missing = [column for column in ("user", "board") if column not in pins.columns]
    if missing:
        raise PintopicError(f"{path} has no {' or '.join(missing)} column: profiles need a crawl's users and boards")
    pins = pins[pins["board"].notna() & pins["user"].notna()].reset_index(drop=True)
    if not len(pins):
        raise PintopicError(f"{path} has no pin with a user and a board")
    if not any(str(c).startswith(PROBABILITY_PREFIX) for c in pins.columns):
        pins = _from_top_k(pins)
    for column, default in (("given", None), ("part", "")):
        if column not in pins.columns:
            pins[column] = default
    categories = [str(c)[len(PROBABILITY_PREFIX):] for c in pins.columns if str(c).startswith(PROBABILITY_PREFIX)]
    return pins, categories, out_dir


def _from_top_k(pins):
    """Probability columns from ``top1..k``/``score1..k``: named categories get their scores, the rest share what is left."""
    ranks = sorted(int(c[3:]) for c in pins.columns if str(c).startswith("top") and str(c)[3:].isdigit())
    if not ranks or any(f"score{r}" not in pins.columns for r in ranks):
        raise PintopicError("the predictions file has neither p:<category> columns nor top<k>/score<k> pairs")
    categories = sorted({str(v) for r in ranks for v in pins[f"top{r}"].dropna()})
    probs = np.zeros((len(pins), len(categories)))
    column_of = {name: i for i, name in enumerate(categories)}
    for r in ranks:
        index = pins[f"top{r}"].astype(str).map(column_of).to_numpy()
        probs[np.arange(len(pins)), index] = pins[f"score{r}"].astype(float).clip(lower=0).to_numpy()
    unnamed = (probs == 0).sum(axis=1, keepdims=True)
    rest = np.clip(1 - probs.sum(axis=1, keepdims=True), 0, None) / np.maximum(unnamed, 1)
    probs = np.where(probs == 0, np.maximum(rest, FLOOR), probs)
    probs /= probs.sum(axis=1, keepdims=True)
    pins = pins.copy()
    for name, column in column_of.items():
        pins[PROBABILITY_PREFIX + name] = probs[:, column]
    return pins


def _board_frame(pins, categories, rule_scores, rule):
    """One row per board: its user and name, given and predicted category, confidence, pin count and part."""
    import pandas as pd

    from pintopic.predict.aggregate import board_confidence

    first = pins.groupby("board_index", sort=True).agg(
        user=("user", "first"), board=("board", "first"), n_pins=("image_id", "size"),
        given_category=("given", lambda v: v.mode().iloc[0] if v.notna().any() else None),
        part=("part", lambda v: v.iloc[0] if v.nunique() == 1 else "mixed"))
    first["predicted_category"] = np.asarray(categories)[rule_scores.argmax(axis=1)]
    first["confidence"] = board_confidence(rule_scores, rule)
    first["rule"] = rule
    return pd.DataFrame(first).reset_index(drop=True)[
        ["user", "board", "given_category", "predicted_category", "confidence", "n_pins", "part", "rule"]]


def choose_board_rule(probs, board_index, board_given, board_part, categories, *, users=None, rule: str = "auto",
                      mixture=None):
    """``(rule, agreement)``: ``rule`` itself, or under ``auto`` the rule whose board categories best match the
    given ones on the training boards (all boards when none is marked ``train``); ties go to the earlier rule.
    ``mixture()``, if given, returns the pins' board posterior (computed once elsewhere)."""
    if rule != "auto":
        if rule not in BOARD_RULES:
            raise PintopicError(f"unknown board rule {rule!r}; choose auto or one of {', '.join(BOARD_RULES)}")
        return rule, {}
    import pandas as pd

    from pintopic.predict.aggregate import board_scores

    known = pd.notna(board_given)
    chosen = known & (board_part == "train") if (known & (board_part == "train")).any() else known
    if not chosen.any():
        return "mean-log", {}
    names = np.asarray(categories)

    def named(candidate):
        posterior = mixture() if mixture is not None and candidate == "mixture" else None
        return names[board_scores(probs, board_index, candidate, users=users, posterior=posterior).argmax(axis=1)]

    agreement = {candidate: float(np.mean(named(candidate)[chosen] == board_given[chosen])) for candidate in BOARD_RULES}
    return max(BOARD_RULES, key=lambda candidate: (agreement[candidate], -BOARD_RULES.index(candidate))), agreement


def _user_frame(pins, probs, categories, *, seed: int):
    """Long table: per user and category, the share with its bootstrap interval, and the user's pin and board counts."""
    import pandas as pd

    from pintopic.predict.aggregate import share_interval

    rows = []
    for user, group in pins.groupby("user", sort=True):
        P = probs[group.index.to_numpy()]
        shares = P.mean(axis=0)
        low, high = share_interval(P, group["board_index"].to_numpy(), resamples=BOOTSTRAP_RESAMPLES, seed=seed)
        n_boards = group["board_index"].nunique()
        rows += [{"user": str(user), "category": name, "share": float(shares[k]), "low": float(low[k]),
                  "high": float(high[k]), "n_pins": len(group), "n_boards": int(n_boards)} for k, name in enumerate(categories)]
    return pd.DataFrame(rows)


def profile(source: str | os.PathLike, *, truth=None, board_rule: str = "auto", user_rule: str = "filed",
            seed: int = 0) -> dict:
    """Write boards.parquet, users.parquet and profile.json for ``source`` (a run folder or a predictions
    parquet); returns profile.json's content. With ``truth``, every user rule is scored (``users_by_rule``)."""
    from contextlib import nullcontext

    from pintopic.runio import RunLock, write_json, write_parquet

    if user_rule not in USER_RULES:
        raise PintopicError(f"unknown user rule {user_rule!r}; choose from {', '.join(USER_RULES)}")
    pins, categories, out_dir = load_pins(source)
    with RunLock(source) if Path(source).is_dir() else nullcontext():
        evidence = pin_evidence(pins, categories)
        boards = _boards(pins, categories, evidence, board_rule)
        by_rule = user_distributions(evidence, USER_RULES if truth else (user_rule,))
        users = _user_frame(pins, by_rule[user_rule], categories, seed=seed)
        record = {"source": str(source), "n_pins": len(pins), "n_boards": len(boards), "n_users": int(users["user"].nunique()),
                  "categories": categories, "board_rule": boards.attrs["rule"], "board_rule_agreement": boards.attrs["agreement"],
                  "user_rule": user_rule, "given_known": float(np.mean(evidence["given"] >= 0)),
                  "min_board_pins": MIN_BOARD_PINS, "min_user_pins": MIN_USER_PINS}
        if truth:
            from pintopic.predict.profile_scoring import score_against_truth

            record["truth"], boards["true_category"] = score_against_truth(
                pins, evidence["probs"], by_rule, user_rule, categories, boards, truth, seed=seed,
                mixture=evidence_posterior(evidence))
        write_parquet(out_dir / "boards.parquet", boards)
        write_parquet(out_dir / "users.parquet", users)
        write_json(out_dir / "profile.json", record)
    return record


def pin_evidence(pins, categories) -> dict:
    """What the rules read, as arrays: ``probs`` (n, K), ``board_index``, ``users``, ``given`` (each pin's board's
    filed category as a class index, -1 where unknown or not a model class) and per board its given name and part.
    Adds ``board_index`` to ``pins``."""
    from pintopic.dataset.split import board_keys
    from pintopic.predict.aggregate import group_index

    probs = pins[[PROBABILITY_PREFIX + name for name in categories]].to_numpy(dtype=np.float64)
    _, board_index = group_index(board_keys(pins["user"], pins["board"]))
    pins["board_index"] = board_index
    per_board = pins.groupby("board_index", sort=True)
    board_given = per_board["given"].agg(lambda v: v.mode().iloc[0] if v.notna().any() else None).to_numpy()
    board_part = per_board["part"].agg(lambda v: v.iloc[0] if v.nunique() == 1 else "mixed").astype(str).to_numpy()
    column = {name: k for k, name in enumerate(categories)}
    given = np.array([column.get(name, -1) if name is not None else -1 for name in board_given], dtype=int)[board_index]
    return {"probs": probs, "board_index": board_index, "users": pins["user"].astype(str).to_numpy(), "given": given,
            "board_given": board_given, "board_part": board_part, "posteriors": {}}


def evidence_posterior(evidence: dict, *, filed: bool = False):
    """The pins' board posterior (:func:`~pintopic.classify.boards.board_posterior`), believing their boards' filed
    categories when ``filed`` and any is known; computed once per evidence, whichever rules and scores read it
    (its EM is the costly step on a large crawl)."""
    from pintopic.classify.boards import board_posterior

    given = evidence["given"] if filed and (evidence["given"] >= 0).any() else None
    cache = evidence["posteriors"]
    key = given is not None
    if key not in cache:
        cache[key] = board_posterior(evidence["probs"], evidence["board_index"], users=evidence["users"], given=given)
    return cache[key]


def _boards(pins, categories, evidence: dict, board_rule: str):
    """The boards frame: each board named from its pins alone by ``board_rule`` (or the rule ``auto`` picks)."""
    from pintopic.predict.aggregate import board_scores

    probs, board_index, users = evidence["probs"], evidence["board_index"], evidence["users"]
    rule, agreement = choose_board_rule(probs, board_index, evidence["board_given"], evidence["board_part"], categories,
                                        users=users, rule=board_rule, mixture=lambda: evidence_posterior(evidence))
    posterior = evidence_posterior(evidence) if rule == "mixture" else None
    boards = _board_frame(pins, categories, board_scores(probs, board_index, rule, users=users, posterior=posterior), rule)
    boards.attrs.update(rule=rule, agreement=agreement)
    return boards


def user_distributions(evidence: dict, rules) -> dict:
    """Per rule of ``rules`` (:data:`USER_RULES`), per pin, the distribution its owner's profile averages: its own
    probabilities (``mean``), its board-aware posterior (``board``), that posterior's top category (``counts``),
    or the top category of the posterior that also believes the board's filed category as far as boards are
    filed right (``filed``; the same as ``counts`` when no board's category is known). Each posterior is
    computed once, whichever rules read it."""
    probs = evidence["probs"]

    def posterior(filed: bool) -> np.ndarray:
        return evidence_posterior(evidence, filed=filed).pins

    one_hot = np.eye(probs.shape[1])
    read = {"mean": lambda: probs, "board": lambda: posterior(False),
            "counts": lambda: one_hot[posterior(False).argmax(axis=1)],
            "filed": lambda: one_hot[posterior(True).argmax(axis=1)]}
    return {rule: read[rule]() for rule in rules}
