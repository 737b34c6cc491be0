"""Training labels from the board mixture: each pin's posterior over its true category, refined by EM rounds.

The board mixture (:mod:`pintopic.classify.boards`), given a board's category as a prior on its theme and
its pins' calibrated out-of-fold probabilities, gives every pin a posterior over its category that knows
its board-mates: a wrongly filed board's pins move to the theme they show, an off-theme pin to the owner's
interest it looks like. These posteriors are the pins' soft labels. One round is not enough: the model
that scored the pins learnt from the noisy labels, so a small category whose boards are partly wrongly
filed is poorly known to it and its pins get absorbed by large categories. Each further round refits the
model on the current soft labels (out of fold again) and recomputes the posteriors, damped (the mean of the
old and new labels, which stops the rounds from oscillating), until the labels stop moving
(:data:`TOLERANCE`) or :data:`MAX_ROUNDS`. The temperature is fitted once, on the noisy-label model
(refitting it every round made the rounds oscillate). A class balance (``balance``, see
:func:`~pintopic.classify.oof.class_weights`) keeps small categories visible to the model; the treatment's
cross-validation chooses it (:mod:`pintopic.classify.noise_aware`).
"""
from __future__ import annotations

import numpy as np

#: The most EM rounds (each one refits the out-of-fold model on the current soft labels).
MAX_ROUNDS = 6
#: Rounds stop when the soft labels move less than this (half the mean L1 change per pin: a share of the pins).
TOLERANCE = 0.025


def soft_labels(Z, given, boards, users, folds, classes, *, pred_probs, temperature: float | None = None,
                balance: float = 0.0, seed: int = 0, max_rounds: int = MAX_ROUNDS) -> tuple[np.ndarray, dict]:
    """``(labels, info)``: ``(n, K)`` soft labels for the projected rows ``Z`` with ``given`` class indices, from
    their out-of-fold probabilities ``pred_probs`` (the folds ``folds``, grouped by board) at ``temperature``
    (fitted when None); ``info`` holds the temperature and the rounds run."""
    from pintopic.classify.boards import board_posterior, calibrate, fit_temperature
    from pintopic.classify.oof import out_of_fold

    if temperature is None:
        temperature = fit_temperature(pred_probs, boards, given, users=users)

    def posterior(probabilities):
        return board_posterior(calibrate(probabilities, temperature), boards, users=users, given=given).pins

    labels, rounds = posterior(pred_probs), 1
    while rounds < max_rounds:
        refitted = out_of_fold(Z, labels, folds, classes, balance=balance, seed=seed, n_jobs=1)
        new = 0.5 * (labels + posterior(refitted))
        change = 0.5 * float(np.abs(new - labels).sum(axis=1).mean())
        labels, rounds = new, rounds + 1
        if change < TOLERANCE:
            break
    return labels, {"temperature": temperature, "rounds": rounds}
