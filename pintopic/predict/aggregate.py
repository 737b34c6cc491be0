"""Pin probabilities aggregated per board (a category) and per user (an interest profile), as plain arrays.

``P`` is ``(n, K)`` pin probabilities, ``board_index`` maps each pin to a board 0..B-1. Pure functions, so
tests can check them against hand-computed answers; :mod:`pintopic.predict.profile` is the stage around them.
"""
from __future__ import annotations

import numpy as np

from pintopic.classify.boards import group_sum

#: Probabilities are clipped to this before logs, so one pin the model finds impossible cannot veto a board.
LOG_FLOOR = 1e-4


def group_index(keys) -> tuple[np.ndarray, np.ndarray]:
    """``(unique keys, index of each row's key)``, keys sorted."""
    return np.unique(np.asarray(keys, dtype=str), return_inverse=True)


def board_scores(P: np.ndarray, board_index: np.ndarray, rule: str, *, users=None, context: dict | None = None,
                 posterior=None) -> np.ndarray:
    """``(B, K)`` scores whose argmax is each board's category under ``rule`` (see ``profile.BOARD_RULES``);
    ``users`` feed the ``mixture`` rule's off-theme distribution; ``context`` (``prior``, ``rho``, ``off_theme``:
    see :func:`~pintopic.classify.boards.board_posterior`) gives it what a few pins cannot measure themselves;
    ``posterior``: that rule's :class:`~pintopic.classify.boards.BoardPosterior` of these pins, if already computed."""
    P = np.asarray(P, dtype=np.float64)
    n_boards = int(board_index.max()) + 1
    counts = np.bincount(board_index, minlength=n_boards)[:, None]
    if rule == "mean-log":
        return group_sum(board_index, np.log(np.clip(P, LOG_FLOOR, 1.0)), n_boards) / counts
    if rule == "mean":
        return group_sum(board_index, P, n_boards) / counts
    if rule == "vote":  # ties go to the higher summed probability
        votes = group_sum(board_index, np.eye(P.shape[1])[P.argmax(axis=1)], n_boards)
        return votes + 1e-6 * group_sum(board_index, P, n_boards) / counts
    if rule == "mixture":
        from pintopic.classify.boards import board_posterior

        if posterior is None:
            posterior = board_posterior(P, board_index, users=users, **(context or {}))
        return posterior.themes
    raise ValueError(f"unknown board rule {rule!r}")


def board_confidence(scores: np.ndarray, rule: str) -> np.ndarray:
    """The chosen category's share of the board's evidence, in [0, 1] (softmax for mean-log scores)."""
    if rule == "mean-log":
        from scipy.special import softmax

        scores = softmax(scores, axis=1)
    return scores.max(axis=1) / np.clip(scores.sum(axis=1), 1e-12, None)


def user_shares(P: np.ndarray, user_index: np.ndarray) -> np.ndarray:
    """``(U, K)`` interest profiles: the mean probability of each category over a user's pins."""
    n_users = int(user_index.max()) + 1
    return group_sum(user_index, np.asarray(P, dtype=np.float64), n_users) / np.bincount(user_index, minlength=n_users)[:, None]


def share_interval(P: np.ndarray, board_index: np.ndarray, *, resamples: int = 999, seed: int = 0,
                   level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """95 % percentile-bootstrap interval ``(low, high)`` of one user's profile (``P``: their pins), resampling
    their boards (pins when there is only one board): pins of one board are not independent draws."""
    from scipy.stats import bootstrap

    _, clusters = np.unique(board_index, return_inverse=True)
    if clusters.max() == 0:
        clusters = np.arange(len(P))
    if clusters.max() == 0:  # a single pin: nothing to resample
        return P[0].copy(), P[0].copy()
    sums = group_sum(clusters, np.asarray(P, dtype=np.float64), int(clusters.max()) + 1)
    sizes = np.bincount(clusters).astype(np.float64)

    def statistic(index, axis=-1):
        index = index.astype(int)
        shares = sums[index].sum(axis=-2) / sizes[index].sum(axis=-1)[..., None]
        return np.moveaxis(shares, -1, 0)

    result = bootstrap((np.arange(len(sizes)),), statistic, n_resamples=resamples, confidence_level=level,
                       method="percentile", vectorized=True, random_state=seed)
    return np.asarray(result.confidence_interval.low), np.asarray(result.confidence_interval.high)


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0 = equal, 1 = disjoint) between two distributions."""
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64), base=2) ** 2)
