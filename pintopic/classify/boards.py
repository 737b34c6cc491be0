"""A board as a mixture: most pins show its theme, a share ``off_theme`` come from its owner's other interests.

Pin probabilities ``P`` (from a model that never saw the board) are turned into likelihoods ``P / prior``
and combined over a board's pins: the board's theme ``t`` explains pin ``i`` with weight
``(1 - eps) L[i, t] + eps sum_c L[i, c] rho(c)``, where ``rho`` is the owner's interest profile (the mean
probability over their pins) or the overall one. This gives, per board, a posterior over its theme and,
per pin, a posterior over its own category that knows its board-mates. ``eps`` (the off-theme share) and,
when a given label is known, the share of wrongly filed boards are estimated by EM (Dempster et al. 1977).
Used to flag label issues (with the given label as a prior on the theme) and to name a board's category
from its pins alone (no given label: a flat prior).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Probabilities are clipped to this before logs, so a pin the model finds impossible cannot veto a board.
FLOOR = 1e-4
EM_STEPS = 30


@dataclass
class BoardPosterior:
    """Output of :func:`board_posterior`: per board, its theme posterior; per pin, its category posterior."""

    board_index: np.ndarray  # (n,) the board of each pin (0..B-1)
    themes: np.ndarray  # (B, K) posterior of each board's theme
    pins: np.ndarray  # (n, K) posterior of each pin's category
    off_theme: float  # estimated share of off-theme pins
    wrong_boards: float | None  # estimated share of wrongly filed boards (None without given labels)


def group_sum(index: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Row sums of ``values`` per group (``index`` in 0..n_groups-1)."""
    from scipy.sparse import csr_matrix

    indicator = csr_matrix((np.ones(len(index)), (index, np.arange(len(index)))), shape=(n_groups, len(index)))
    return np.asarray(indicator @ values)


def interest_profiles(P: np.ndarray, users, mix: float = 0.1) -> np.ndarray:
    """Per pin, its owner's interest profile (mean probability over the owner's pins), mixed with a ``mix``
    share of the overall profile so that no category is impossible; ``(n, K)``."""
    _, user_index = np.unique(np.asarray(users, dtype=str), return_inverse=True)
    sums = group_sum(user_index, P, user_index.max() + 1)
    per_user = sums / sums.sum(axis=1, keepdims=True)
    return (1 - mix) * per_user[user_index] + mix * P.mean(axis=0)


def board_posterior(P: np.ndarray, boards, *, users=None, given=None, prior=None, rho=None, off_theme: float | None = None,
                    wrong_boards: float | None = None, steps: int = EM_STEPS) -> BoardPosterior:
    """Theme and pin posteriors for pins ``P`` (n x K) on ``boards`` (a key per pin).

    ``users`` (a key per pin) gives each board its owner's interests as the off-theme distribution;
    ``given`` (class index per pin, constant on a board) is the label the board is filed under, believed
    with probability ``1 - wrong_boards``; ``prior`` is the class prior the model's probabilities carry
    (default: their mean); ``rho`` ((n, K) or (K,)) replaces the off-theme distribution, e.g. the owners'
    interests measured on more pins than ``P`` holds. ``off_theme``/``wrong_boards`` left None are estimated by EM.
    """
    P = np.clip(np.asarray(P, dtype=np.float64), FLOOR, 1.0)
    K = P.shape[1]
    _, board_index = np.unique(np.asarray(boards), return_inverse=True)
    B = int(board_index.max()) + 1
    prior = P.mean(axis=0) if prior is None else np.asarray(prior, dtype=np.float64)
    L = P / prior
    L /= L.sum(axis=1, keepdims=True)
    if rho is None:
        rho = interest_profiles(P, users) if users is not None else P.mean(axis=0)
    rho = np.broadcast_to(np.asarray(rho, dtype=np.float64), P.shape)
    background = (L * rho).sum(axis=1)  # sum_c L[i, c] rho(c): how well "some other interest" explains pin i
    given_board = None
    if given is not None:
        given_board = np.zeros(B, dtype=int)
        given_board[board_index] = np.asarray(given)
    eps = 0.2 if off_theme is None else float(off_theme)
    wrong = 0.1 if wrong_boards is None else float(wrong_boards)
    for _ in range(max(1, steps)):
        mixture = (1 - eps) * L + eps * background[:, None]  # (n, K): pin i's likelihood under theme t
        log_theme = group_sum(board_index, np.log(mixture), B)
        if given_board is not None:
            theme_prior = np.full((B, K), wrong / max(K - 1, 1))
            theme_prior[np.arange(B), given_board] = 1 - wrong
            log_theme += np.log(np.clip(theme_prior, 1e-12, None))
        themes = np.exp(log_theme - log_theme.max(axis=1, keepdims=True))
        themes /= themes.sum(axis=1, keepdims=True)
        pin_themes = themes[board_index]
        off_share = (pin_themes * (eps * background[:, None] / mixture)).sum(axis=1)
        new_eps = float(off_share.mean()) if off_theme is None else eps
        new_wrong = float(1 - themes[np.arange(B), given_board].mean()) if given_board is not None and wrong_boards is None else wrong
        converged = abs(new_eps - eps) < 1e-5 and abs(new_wrong - wrong) < 1e-5
        eps, wrong = min(max(new_eps, 1e-3), 0.95), min(max(new_wrong, 1e-3), 0.95)
        if converged:
            break
    mixture = (1 - eps) * L + eps * background[:, None]
    # pin i's category c: theme c itself (weight (1 - eps) L[i, c]) or an off-theme draw (eps L[i, c] rho(c))
    pins = (1 - eps) * pin_themes * L / mixture + eps * L * rho * (pin_themes / mixture).sum(axis=1, keepdims=True)
    pins /= pins.sum(axis=1, keepdims=True)
    return BoardPosterior(board_index, themes, pins, eps, wrong if given_board is not None else None)
