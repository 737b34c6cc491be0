"""Reading a crawl's truth file (``OUT/truth.parquet`` of a noisy ``make-crawl``): the true category of every pin.

Only scoring reads it, and only when given its path (``--truth``): training, flagging and aggregation see
the given labels alone. Pins are matched by ``(user, board, pin)``, the crawl's own names.
"""
from __future__ import annotations

import os

from pintopic.errors import PintopicError

TRUTH_COLUMNS = ("user", "board", "pin", "category")


def read_truth(path: str | os.PathLike):
    """The truth table as a DataFrame (at least ``user``, ``board``, ``pin``, ``category``; one row per pin)."""
    from pintopic.safeio import UnreadableFileError, read_parquet_table

    if not os.path.isfile(path):
        raise PintopicError(f"truth file {path} not found (make-crawl with --off-theme/--wrong-boards writes OUT/truth.parquet)")
    try:
        frame = read_parquet_table(path)  # a pipe planted there must not block
    except UnreadableFileError as error:
        raise PintopicError(f"truth file {error}") from None
    missing = [column for column in TRUTH_COLUMNS if column not in frame.columns]
    if missing:
        raise PintopicError(f"truth file {path} lacks column(s) {', '.join(missing)}")
    for column in TRUTH_COLUMNS:
        frame[column] = frame[column].astype(str)
    if frame.duplicated(["user", "board", "pin"]).any():
        raise PintopicError(f"truth file {path} lists some pin more than once")
    return frame


def true_categories(pins, truth) -> list[str]:
    """The true category of each row of ``pins`` (columns ``user``, ``board``, ``pin``), in its order."""
    keys = pins[["user", "board", "pin"]].astype(str)
    merged = keys.merge(truth[list(TRUTH_COLUMNS)], on=["user", "board", "pin"], how="left", validate="many_to_one")
    if merged["category"].isna().any():
        missing = int(merged["category"].isna().sum())
        raise PintopicError(f"the truth file has no category for {missing} pin(s) of this run; is it the crawl's own?")
    return merged["category"].tolist()
