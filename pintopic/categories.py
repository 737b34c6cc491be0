"""Pinterest's board categories and the normalisation of free-form category names onto them."""
from __future__ import annotations

import re

from pintopic.errors import PintopicError

#: The 32 categories of the study (Pinterest's 34 minus ``none`` and ``other``).
CANONICAL: tuple[str, ...] = (
    "animals", "architecture", "art", "cars_motorcycles", "celebrities", "design",
    "diy_crafts", "education", "film_music_books", "food_drink", "gardening", "geek",
    "hair_beauty", "health_fitness", "history", "holidays_events", "home_decor", "humor",
    "illustrations_posters", "kids", "mens_fashion", "outdoors", "photography", "products",
    "quotes", "science_nature", "sports", "tattoos", "technology", "travel", "weddings",
    "womens_fashion",
)

#: Categories the study drops before sampling.
DEFAULT_EXCLUDED: tuple[str, ...] = ("none", "other")

#: Human-readable names, used by zero-shot prompts and reports.
DISPLAY_NAMES: dict[str, str] = {
    "animals": "animals and pets", "architecture": "architecture", "art": "art",
    "cars_motorcycles": "cars and motorcycles", "celebrities": "celebrities", "design": "design",
    "diy_crafts": "DIY and crafts", "education": "education",
    "film_music_books": "film, music and books", "food_drink": "food and drink",
    "gardening": "gardening", "geek": "geek culture", "hair_beauty": "hair and beauty",
    "health_fitness": "health and fitness", "history": "history",
    "holidays_events": "holidays and events", "home_decor": "home decor", "humor": "humor",
    "illustrations_posters": "illustrations and posters", "kids": "kids and parenting",
    "mens_fashion": "men's fashion", "outdoors": "outdoors", "photography": "photography",
    "products": "products", "quotes": "quotes", "science_nature": "science and nature",
    "sports": "sports", "tattoos": "tattoos", "technology": "technology", "travel": "travel",
    "weddings": "weddings", "womens_fashion": "women's fashion",
}

_KEY_BY_SQUASHED = {re.sub(r"[^a-z0-9]", "", name): name for name in CANONICAL}


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("&", "").replace(" and ", ""))


def normalize_category(name: str | None) -> str | None:
    """Map a free-form name ("Food & Drink", "food drink") to its canonical key; keep others as given.

    Names outside the canonical list are only stripped, so folder datasets keep their own labels.
    """
    if name is None:
        return None
    name = str(name).strip()
    if not name:
        return None
    squashed = _squash(name)
    if squashed in _KEY_BY_SQUASHED:
        return _KEY_BY_SQUASHED[squashed]
    if squashed in ("none", "other"):
        return squashed
    return name


def display_name(category: str) -> str:
    """A readable name for prompts and figures ("food_drink" -> "food and drink")."""
    return DISPLAY_NAMES.get(category, category.replace("_", " "))


class CategoryMap:
    """Board -> category labels given by the user (``--categories MAP.csv``): by board id, or by owner + board name.

    Pinterest's API v5 has no board category, so collected boards (and gallery-dl downloads without one) are
    labelled from this file. Owner and board names match ignoring case and surrounding spaces.
    """

    def __init__(self, by_board_id: dict[str, str], by_owner_board: dict[tuple[str, str], str], source: str = ""):
        self.by_board_id = by_board_id
        self.by_owner_board = by_owner_board
        self.source = source

    def __len__(self) -> int:
        return len(self.by_board_id) + len(self.by_owner_board)

    def lookup(self, board_id=None, owner: str | None = None, board: str | None = None) -> str | None:
        """The category of a board (by id first, then owner + name), or None when the map does not list it."""
        if board_id is not None and str(board_id).strip() in self.by_board_id:
            return self.by_board_id[str(board_id).strip()]
        if owner is not None and board is not None:
            return self.by_owner_board.get(_owner_board_key(owner, board))
        return None


def _owner_board_key(owner: str, board: str) -> tuple[str, str]:
    return str(owner).strip().casefold(), str(board).strip().casefold()


#: Largest category map read (a pipe or a giant file planted there is refused, not read forever).
MAX_CATEGORY_MAP_BYTES = 64 * 1024**2


def read_category_map(path) -> CategoryMap:
    """Read a CSV with a ``category`` column and ``board_id`` and/or ``owner`` + ``board`` columns.

    Each row needs a category and either a board id or an owner and a board name. A bad row, or one
    board given two different categories, is an error naming the line (a label file is small and
    must be right: nothing is guessed).
    """
    import csv
    from pathlib import Path

    from pintopic.safeio import read_text_file

    path = Path(path)
    text = read_text_file(path, MAX_CATEGORY_MAP_BYTES, "category map")
    reader = csv.DictReader(text.splitlines())
    columns = {str(name).strip().lower(): name for name in reader.fieldnames or ()}
    if "category" not in columns or not ("board_id" in columns or {"owner", "board"} <= set(columns)):
        raise PintopicError(f"the category map {path} needs a 'category' column and a 'board_id' column or "
                            f"'owner' and 'board' columns (found: {', '.join(columns) or 'nothing'})")
    by_id: dict[str, str] = {}
    by_name: dict[tuple[str, str], str] = {}
    for line, row in enumerate(reader, start=2):
        cell = {key: (row.get(name) or "").strip() for key, name in columns.items()}
        category = normalize_category(cell.get("category"))
        if category is None:
            raise PintopicError(f"{path}, line {line}: empty category")
        if cell.get("board_id"):
            _add_label(by_id, cell["board_id"], category, f"{path}, line {line}: board id {cell['board_id']}")
        elif cell.get("owner") and cell.get("board"):
            key = _owner_board_key(cell["owner"], cell["board"])
            _add_label(by_name, key, category, f"{path}, line {line}: board {cell['owner']}/{cell['board']}")
        else:
            raise PintopicError(f"{path}, line {line}: give a board_id, or an owner and a board name")
    return CategoryMap(by_id, by_name, str(path))


def _add_label(labels: dict, key, category: str, where: str) -> None:
    if labels.get(key, category) != category:
        raise PintopicError(f"{where} is given two categories ({labels[key]} and {category})")
    labels[key] = category
