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


def assign_statuses(entries: Sequence[Entry], decoded: Sequence[Verified | None], exclude: Iterable[str]) -> list[dict]:
    """Manifest rows (dicts, in the order of ``entries``) with their final status."""
    excluded = set(exclude)
    rows: list[dict] = []
    candidates: dict[str, list[int]] = {}
    for entry, result in zip(entries, decoded):
        row = {
            "image_id": entry.image_id, "path": entry.path, "abspath": entry.abspath, "user": entry.user,
            "board": entry.board, "pin": entry.pin, "category": entry.category, "status": None,
            "reason_detail": "", "sha256": None, "width": None, "height": None,
            "file_size": entry.size, "mtime_ns": entry.mtime_ns, "_rel": entry.rel,
        }
        if result is not None:
            row["sha256"], row["width"], row["height"] = result.sha256, result.width, result.height
        if entry.status in ("outside_root", "missing_image") or not entry.decode or result is None:
            row["status"], row["reason_detail"] = entry.status or "missing_image", entry.detail
        elif result.status != "ok":
            row["status"], row["reason_detail"] = result.status, result.detail
        elif entry.status is not None:
            row["status"], row["reason_detail"] = entry.status, entry.detail
        elif entry.category in excluded:
            row["status"], row["reason_detail"] = "excluded_category", f"category {entry.category!r} is excluded"
        else:
            candidates.setdefault(result.sha256, []).append(len(rows))
        rows.append(row)
    for indices in candidates.values():
        if len(indices) == 1:
            rows[indices[0]]["status"] = "ok"
            continue
        indices.sort(key=lambda index: rows[index]["_rel"])
        categories = sorted({rows[index]["category"] for index in indices})
        if len(categories) > 1:
            where = ", ".join(rows[index]["path"] for index in indices[:4]) + (" ..." if len(indices) > 4 else "")
            for index in indices:
                rows[index]["status"] = "conflict"
                rows[index]["reason_detail"] = (f"the same content is labelled {', '.join(categories)} "
                                                f"({len(indices)} copies: {where})")
            continue
        first = rows[indices[0]]
        first["status"] = "ok"
        for index in indices[1:]:
            rows[index]["status"] = "duplicate"
            rows[index]["reason_detail"] = f"same content as {first['path']}"
    for row in rows:
        del row["_rel"]
    return rows


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
