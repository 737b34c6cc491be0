"""From a listing and decode results to one status per file.

Precedence, first match wins:

1. a status from the listing that means there is nothing to decode: ``outside_root``, ``missing_image``;
2. a decode failure: ``empty``, ``truncated``, ``not_an_image``, ``unsupported``, ``too_large``;
3. a metadata status from the listing: ``bad_metadata``, ``no_category``, ``conflict`` (a table
   giving one path two categories);
4. ``excluded_category``;
5. content duplicates among the remaining rows, by SHA-256 of the file bytes: the same content under
   two or more categories makes every copy ``conflict``; within one category the first copy by path
   order stays ``ok`` and the later ones are ``duplicate``.

Because decode failures come before the metadata and cleaning statuses, a row whose status is
``ok``, ``bad_metadata``, ``no_category``, ``conflict``, ``excluded_category`` or ``duplicate`` and
that has a ``sha256`` decoded fine: the manifest doubles as the per-file decode cache
(:func:`cached_decode`), so a rerun with other exclusions or sampling settings decodes nothing.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from pintopic.dataset.layouts import Entry
from pintopic.dataset.verify import Verified

DECODE_FAILURES = ("empty", "truncated", "not_an_image", "unsupported", "too_large", "missing_image")


def assign_statuses(entries: Sequence[Entry], decoded: Sequence[Verified | None], exclude: Iterable[str]) -> dict[str, list]:
    """The manifest's columns (:func:`~pintopic.dataset.manifest.manifest_schema` names, lists in the order of
    ``entries``) with each file's final status; columns, not row dicts, so a million files fit a driver."""
    excluded = set(exclude)
    count = len(entries)
    status: list[str | None] = [None] * count
    detail = [""] * count
    candidates: dict[str, list[int]] = {}
    for index, (entry, result) in enumerate(zip(entries, decoded)):
        if entry.status in ("outside_root", "missing_image") or not entry.decode or result is None:
            status[index], detail[index] = entry.status or "missing_image", entry.detail
        elif result.status != "ok":
            status[index], detail[index] = result.status, result.detail
        elif entry.status is not None:
            status[index], detail[index] = entry.status, entry.detail
        elif entry.category in excluded:
            status[index], detail[index] = "excluded_category", f"category {entry.category!r} is excluded"
        else:
            candidates.setdefault(result.sha256, []).append(index)
    for indices in candidates.values():
        _resolve_copies(entries, indices, status, detail)
    return {"image_id": [entry.image_id for entry in entries], "path": [entry.path for entry in entries],
            "abspath": [entry.abspath for entry in entries], "user": [entry.user for entry in entries],
            "board": [entry.board for entry in entries], "pin": [entry.pin for entry in entries],
            "category": [entry.category for entry in entries], "status": status, "reason_detail": detail,
            "sha256": [None if result is None else result.sha256 for result in decoded],
            "width": [None if result is None else result.width for result in decoded],
            "height": [None if result is None else result.height for result in decoded],
            "file_size": [entry.size for entry in entries], "mtime_ns": [entry.mtime_ns for entry in entries]}


def _resolve_copies(entries: Sequence[Entry], indices: list[int], status: list, detail: list) -> None:
    """Statuses of the decodable files sharing one content hash: ``ok`` when alone; else every copy ``conflict``
    across categories, or the first by path ``ok`` and the rest ``duplicate`` within one."""
    if len(indices) == 1:
        status[indices[0]] = "ok"
        return
    indices = sorted(indices, key=lambda index: entries[index].rel)
    categories = sorted({entries[index].category for index in indices})
    if len(categories) > 1:
        where = ", ".join(entries[index].path for index in indices[:4]) + (" ..." if len(indices) > 4 else "")
        for index in indices:
            status[index] = "conflict"
            detail[index] = f"the same content is labelled {', '.join(categories)} ({len(indices)} copies: {where})"
        return
    status[indices[0]] = "ok"
    for index in indices[1:]:
        status[index], detail[index] = "duplicate", f"same content as {entries[indices[0]].path}"


def cached_decode(row) -> Verified | None:
    """The decode result a previous manifest row records, or None when it was not decoded."""
    sha = row.get("sha256")
    if sha is None or (isinstance(sha, float) and sha != sha):
        return None
    status = row["status"]
    if status in ("outside_root",):
        return None

    def number(value):
        return None if value is None or value != value else int(value)

    if status in DECODE_FAILURES:
        return Verified(status, row.get("reason_detail") or "", sha, number(row.get("width")), number(row.get("height")))
    return Verified("ok", "", sha, number(row.get("width")), number(row.get("height")))
