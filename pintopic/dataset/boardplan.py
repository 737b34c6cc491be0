"""A realistic noisy crawl plan: users with a taste, boards of 10-60 pins, off-theme pins, wrongly filed boards.

Real boards are noisy in two concentrated ways: a board holds pins of other themes (a "Home decor" board
with recipes and cats), and a whole board can carry the wrong category. :func:`plan_boards` lays out which
source image goes onto which board so that both kinds of noise are exact and seeded:

- every user has a taste: ``taste`` dominant categories share :data:`DOMINANT_SHARE` of their interest,
  the rest is spread evenly; a board goes to a user with probability proportional to that user's interest
  in the board's theme;
- a board of ``n`` pins (``n`` drawn from ``board_size``) holds exactly ``round(off_theme * n)`` pins of
  other categories, drawn from its owner's other interests;
- exactly ``round(wrong_boards * boards)`` boards are listed under a category that is not their theme.

Each source image is used at most once (the dataset stage drops repeated contents), so a few images may stay
unused when no board can take them.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from pintopic.errors import PintopicError

#: Share of a user's interest held by their dominant categories.
DOMINANT_SHARE = 0.9


@dataclass(frozen=True)
class NoiseSettings:
    """How noisy a planned crawl is (all zero/None: the plain one-category-per-board crawl)."""

    off_theme: float = 0.0
    wrong_boards: float = 0.0
    board_size: tuple[int, int] = (10, 60)
    taste: int = 3

    def check(self) -> NoiseSettings:
        low, high = self.board_size
        if not 0 <= self.off_theme < 1:
            raise PintopicError(f"--off-theme must be in [0, 1), got {self.off_theme}")
        if not 0 <= self.wrong_boards <= 1:
            raise PintopicError(f"--wrong-boards must be in [0, 1], got {self.wrong_boards}")
        if not 1 <= low <= high:
            raise PintopicError(f"--board-size needs 1 <= MIN <= MAX, got {low}-{high}")
        if self.taste < 1:
            raise PintopicError(f"--taste must be at least 1, got {self.taste}")
        return self


@dataclass
class PlannedPin:
    image: object  # the source entry (layouts.Entry)
    category: str  # its true category (the source folder)
    off_theme: bool


@dataclass
class PlannedBoard:
    theme: str  # the true category of the board
    listed: str  # the category the board is filed under (wrong for a wrongly filed board)
    size: int = 0  # planned number of pins, off-theme ones included
    user: str = ""
    pins: list[PlannedPin] = field(default_factory=list)

    @property
    def wrong(self) -> bool:
        return self.listed != self.theme


def off_theme_count(n_pins: int, off_theme: float) -> int:
    """The exact number of off-theme pins on a board of ``n_pins`` pins."""
    return round(off_theme * n_pins)


def user_tastes(users: list[str], categories: list[str], taste: int, rng: random.Random) -> dict[str, dict[str, float]]:
    """Per user, an interest weight per category: ``taste`` dominant ones share DOMINANT_SHARE, the rest the remainder."""
    tastes = {}
    dominant_count = min(taste, len(categories))
    for user in users:
        dominant = set(rng.sample(categories, dominant_count))
        rest = len(categories) - dominant_count
        share = DOMINANT_SHARE if rest else 1.0
        tastes[user] = {c: share / dominant_count if c in dominant else (1 - share) / rest for c in categories}
    return tastes


def _board_sizes(available: int, settings: NoiseSettings, rng: random.Random) -> list[int]:
    """Sizes of the boards one category's on-theme images fill (each needs ``n - off(n)`` of them)."""
    low, high = settings.board_size
    sizes = []
    while True:
        size = rng.randint(low, high)
        fitting = [n for n in range(low, high + 1) if n - off_theme_count(n, settings.off_theme) <= available]
        if not fitting:
            return sizes
        size = size if size in fitting else max(fitting)
        sizes.append(size)
        available -= size - off_theme_count(size, settings.off_theme)


def plan_boards(images: dict[str, list], users: list[str], settings: NoiseSettings, rng: random.Random) -> list[PlannedBoard]:
    """Boards (owner, theme, listed category, pins) for ``images`` (category -> source entries), seeded by ``rng``."""
    settings.check()
    categories = sorted(images)
    if len(categories) < 2 and settings.off_theme + settings.wrong_boards > 0:
        raise PintopicError("off-theme pins and wrongly filed boards need at least two categories")
    on_supply, off_supply, boards = {}, {}, []
    for category in categories:
        pool = list(images[category])
        rng.shuffle(pool)
        cut = len(pool) - int(settings.off_theme * len(pool))
        on_supply[category], off_supply[category] = pool[:cut], pool[cut:]
        for size in _board_sizes(len(pool[:cut]), settings, rng):
            on = size - off_theme_count(size, settings.off_theme)
            board = PlannedBoard(category, category, size)
            board.pins = [PlannedPin(on_supply[category].pop(), category, False) for _ in range(on)]
            boards.append(board)
        off_supply[category].extend(on_supply[category])  # on-theme images no board took
    tastes = user_tastes(users, categories, settings.taste, rng)
    kept = []
    for board in boards:
        board.user = rng.choices(users, weights=[tastes[user][board.theme] for user in users])[0]
        if _fill_off_theme(board, tastes[board.user], off_supply, rng):
            kept.append(board)
    for board in rng.sample(kept, round(settings.wrong_boards * len(kept))):
        board.listed = rng.choice([c for c in categories if c != board.theme])
    return kept


def _fill_off_theme(board: PlannedBoard, interest: dict[str, float], supply: dict[str, list],
                    rng: random.Random) -> bool:
    """Add the board's off-theme pins from its owner's other interests; False (nothing taken) when supply runs out."""
    wanted = board.size - len(board.pins)
    others = [c for c in supply if c != board.theme]
    if sum(len(supply[c]) for c in others) < wanted:
        return False
    for _ in range(wanted):
        candidates = [c for c in others if supply[c]]
        category = rng.choices(candidates, weights=[interest[c] for c in candidates])[0]
        board.pins.append(PlannedPin(supply[category].pop(), category, True))
    return True
