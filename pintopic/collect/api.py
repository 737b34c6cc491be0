"""Pinterest's API v5, the part the collector reads: the token owner's account, boards, sections and pins.

Lists are paginated: ``{"items": [...], "bookmark": "..." | null}``; the bookmark is passed back to get the
next page, and ``page_size`` is at most 250 (default 25), so the collector always asks for 250. A pin's
``media`` says what it holds (``image``, ``video``, ``multiple_images``, ``multiple_videos``,
``multiple_mixed``); images come in the sizes ``150x150``, ``400x300``, ``600x`` and ``1200x``.
"""
from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from pintopic.collect.client import ApiClient, FetchError

DEFAULT_API_BASE = "https://api.pinterest.com/v5"
#: Pinterest's image CDN, the only host images are fetched from unless ``--allow-host`` says otherwise.
DEFAULT_IMAGE_HOSTS = ("i.pinimg.com",)
#: The image sizes v5 gives, largest first (there are no originals in v5).
IMAGE_SIZES = ("1200x", "600x", "400x300", "150x150")
PAGE_SIZE = 250
#: How often one listing may hand back a bookmark it already gave before it counts as a loop.
MAX_REPEATED_BOOKMARKS = 3

_ID = re.compile(r"^\d{1,32}$")


def valid_id(value) -> str | None:
    """A Pinterest id (digits only) as a string, or None: ids name folders, so nothing else gets through."""
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    return text if _ID.match(text) else None


@dataclass
class Page:
    """One page of a listing: its items, the bookmark that fetched it and the one for the next page."""

    items: list
    bookmark: str | None
    next_bookmark: str | None


class PinterestApi:
    """The endpoints the collector uses, over one user's :class:`ApiClient`."""

    def __init__(self, client: ApiClient):
        self.client = client

    async def user_account(self) -> dict:
        return await self.client.get_json("/user_account", {}, "user_account")

    async def pages(self, path: str, kind: str, bookmark: str | None = None,
                    page_size: int | Callable[[], int] = PAGE_SIZE) -> AsyncIterator[Page]:
        """Every page of the listing at ``path``, starting at ``bookmark``; stops at a null bookmark.

        ``page_size`` may be a function, asked before each page (the collector asks for fewer than 250
        pins when ``--max-pins-per-board`` leaves fewer to take).

        A page that repeats (the server handing back a bookmark it gave before) is fetched again, since
        its items may differ; the caller drops pins it already has. More than
        :data:`MAX_REPEATED_BOOKMARKS` repeats in one listing is a loop and raises :class:`FetchError`.
        """
        seen: set[str] = set()
        repeats = 0
        while True:
            params = {"page_size": page_size() if callable(page_size) else page_size}
            if bookmark:
                params["bookmark"] = bookmark
            data = await self.client.get_json(path, params, kind)
            items = data.get("items")
            if not isinstance(items, list):
                raise FetchError(f"GET {path} returned no 'items' list")
            following = data.get("bookmark") or None
            if following is not None and not isinstance(following, str):
                raise FetchError(f"GET {path} returned a bookmark that is not a string")
            yield Page(items, bookmark, following)
            if following is None:
                return
            if following in seen or following == bookmark:
                repeats += 1
                if repeats > MAX_REPEATED_BOOKMARKS:
                    raise FetchError(f"GET {path} keeps handing back bookmarks it gave before (a pagination loop)")
            seen.add(following)
            bookmark = following


def boards_path() -> str:
    return "/boards"


def board_pins_path(board_id: str) -> str:
    return f"/boards/{board_id}/pins"


def sections_path(board_id: str) -> str:
    return f"/boards/{board_id}/sections"


def section_pins_path(board_id: str, section_id: str) -> str:
    return f"/boards/{board_id}/sections/{section_id}/pins"


@dataclass
class PinImages:
    """What to download for a pin: image URLs (in order) and the size used, or why there is nothing."""

    urls: list[str]
    size: str | None = None
    total: int = 0
    skip: str | None = None
    fail: str | None = None


def _pick(images, size: str) -> tuple[str | None, str | None]:
    """The URL of ``size`` in an ``images`` object, else of the largest smaller size; (url, size used)."""
    if not isinstance(images, dict):
        return None, None
    for candidate in IMAGE_SIZES[IMAGE_SIZES.index(size):]:
        entry = images.get(candidate)
        if isinstance(entry, dict) and isinstance(entry.get("url"), str) and entry["url"]:
            return entry["url"], candidate
    return None, None


def pin_images(pin: dict, size: str, multi_image: str) -> PinImages:
    """The image URLs of ``pin`` at ``size`` (``multi_image``: ``first`` or ``all`` items); videos are skipped."""
    media = pin.get("media") if isinstance(pin.get("media"), dict) else {}
    kind = media.get("media_type")
    if kind in ("video", "multiple_videos"):
        return PinImages([], skip=f"a {kind.replace('_', ' ')} pin: videos are not collected")
    if kind == "image" or (kind is None and "images" in media):
        url, used = _pick(media.get("images"), size)
        return PinImages([url], used, 1) if url else PinImages([], fail=f"no image URL in the pin's media ({kind})")
    if kind in ("multiple_images", "multiple_mixed"):
        items = media.get("items") if isinstance(media.get("items"), list) else []
        picked = [_pick(item.get("images"), size) for item in items
                  if isinstance(item, dict) and item.get("item_type") != "video"]  # video items have no "images"
        picked = [(url, used) for url, used in picked if url]
        if not picked and kind == "multiple_mixed":
            return PinImages([], skip="a mixed pin holding only videos: videos are not collected")
        if not picked:
            return PinImages([], fail="a multiple-images pin without image URLs")
        chosen = picked if multi_image == "all" else picked[:1]
        return PinImages([url for url, _ in chosen], chosen[0][1], len(picked))
    return PinImages([], fail=f"unknown media type {kind!r}")
