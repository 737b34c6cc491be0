"""Pinterest's board categories and the normalisation of free-form category names onto them."""
from __future__ import annotations

import re

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
