"""Find pins whose given label (their board's category) is probably wrong.

Two signals from out-of-fold probabilities computed with folds grouped by board (:mod:`pintopic.classify.oof`):

- ``cleanlab``: confident learning (Northcutt et al. 2021), :func:`cleanlab.filter.find_label_issues` with
  its defaults, on the pins' own probabilities;
- ``posterior``: the board mixture of :mod:`pintopic.classify.boards`; a pin is flagged when its posterior
  of the given label, knowing its board-mates and its owner's interests, is below one half. It sees both
  noises: a board whose pins point elsewhere (wrongly filed) and a pin that disagrees with its board
  (off-theme), but it is cautious (high precision, low recall);
- ``board`` (the default): the two combined. Confident learning says how many labels are wrong (as many
  as ``cleanlab`` flags), the board-aware posterior says which: the pins least likely to carry their given
  label, knowing their board, are flagged up to that count. Without boards (a folders dataset, every pin its
  own board) it is cleanlab's flags ranked by the pin's own probability of its label.

Measured on a noisy openclipart crawl (``benchmarks/noise.py``, docs/results.md) ``board`` beats
cleanlab's default in both precision and recall, so it is the default; the others stay selectable.
"""
from __future__ import annotations

import numpy as np

METHODS = ("board", "cleanlab", "posterior")
DEFAULT_METHOD = "board"


def cleanlab_issues(given: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Boolean mask of cleanlab's label issues with its default settings (prune by noise rate)."""
    from cleanlab.filter import find_label_issues

    return np.asarray(find_label_issues(labels=np.asarray(given), pred_probs=np.asarray(P), n_jobs=1), dtype=bool)


def _top(score: np.ndarray, count: int) -> np.ndarray:
    """Mask of the ``count`` highest scores (ties broken by position, so results are reproducible)."""
    mask = np.zeros(len(score), dtype=bool)
    mask[np.argsort(-score, kind="stable")[:count]] = True
    return mask


def flag_label_issues(P: np.ndarray, given: np.ndarray, boards, users=None, *, method: str = DEFAULT_METHOD):
    """Per pin: ``flagged``, ``score`` (how likely the given label is wrong), ``suggested`` (class index), ``reason``
    and each method's own flag (``flag_board``, ``flag_cleanlab``, ``flag_posterior``), as a DataFrame in the order of ``P``."""
    import pandas as pd

    from pintopic.classify.boards import board_posterior
    from pintopic.errors import PintopicError

    if method not in METHODS:
        raise PintopicError(f"unknown label-issue method {method!r}; choose from {', '.join(METHODS)}")
    given = np.asarray(given, dtype=int)
    rows = np.arange(len(given))
    posterior = board_posterior(P, boards, users=users, given=given)
    Z = posterior.pins
    board_score = 1 - Z[rows, given]
    flags = {"cleanlab": cleanlab_issues(given, P), "posterior": board_score > 0.5}
    flags["board"] = _top(board_score, int(flags["cleanlab"].sum()))
    wrong_board = posterior.themes.argmax(axis=1)[posterior.board_index] != given
    if method == "cleanlab":
        score, suggested = 1 - P[rows, given], P.argmax(axis=1)
    else:
        score, suggested = board_score, Z.argmax(axis=1)
    if len(np.unique(posterior.board_index)) == len(given):  # no boards (a folders dataset): the pins' own view
        flags["board"] = flags["cleanlab"]
        score, suggested = 1 - P[rows, given], P.argmax(axis=1)
    flagged = flags[method]
    reason = np.where(~flagged, "", np.where(wrong_board, "wrong board", "off-theme pin"))
    if len(np.unique(posterior.board_index)) == len(given):
        reason = np.where(flagged, "disagrees with the model", "")
    frame = pd.DataFrame({"flagged": flagged, "score": score, "suggested": suggested, "reason": reason,
                          **{f"flag_{name}": flags[name] for name in METHODS}})
    frame.attrs.update(off_theme=posterior.off_theme, wrong_boards=posterior.wrong_boards)
    return frame


def flag_quality(flagged: np.ndarray, is_issue: np.ndarray) -> dict:
    """Precision, recall and F1 of flags against the truth (``is_issue``: given label != true category)."""
    flagged, is_issue = np.asarray(flagged, dtype=bool), np.asarray(is_issue, dtype=bool)
    hits = int((flagged & is_issue).sum())
    precision = hits / max(int(flagged.sum()), 1)
    recall = hits / max(int(is_issue.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "flagged": int(flagged.sum()), "issues": int(is_issue.sum())}
