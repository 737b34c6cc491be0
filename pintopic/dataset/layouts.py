"""Finding the files of a collection: the crawl, gallery-dl, folders and table layouts, and auto-detection.

A scan only lists and stats files and reads the small metadata files (``boards.json``, ``pin.json``,
the table); it never opens an image. Paths are handled as bytes end to end, so file names that are
not valid UTF-8 survive: ``Entry.rel`` (the path relative to the source, ``/``-separated) gives the
``image_id`` and ``Entry.abspath`` is the exact path to open.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import heapq
import itertools
import json
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pintopic.categories import CategoryMap, normalize_category
from pintopic.errors import PintopicError
from pintopic.runio import is_run_folder
from pintopic.safeio import (
    MAX_METADATA_BYTES,
    UnreadableFileError,
    file_kind,
    one_line,
    read_csv_text,
    read_json_file,
    read_parquet_table,
)

LAYOUTS = ("crawl", "gallery-dl", "folders", "table")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")

#: Names of image files: what ``predict`` takes from a folder, and what makes a directory look like an image
#: file (counted as ``ignored_dirs``).
IMAGE_SUFFIXES = (
    b".jpg", b".jpeg", b".jpe", b".jfif", b".png", b".gif", b".webp", b".bmp", b".tif", b".tiff",
    b".svg", b".svgz", b".heic", b".heif", b".avif", b".ico",
)
#: Files in a pin folder that are metadata, not the pin's image.
_SIDECAR_SUFFIXES = (b".json", b".txt")


def display(path: bytes) -> str:
    """A printable, valid-UTF-8 form of a path: undecodable bytes become ``\\xNN`` escapes."""
    return path.decode("utf-8", "backslashreplace")


def image_id_of(rel: bytes) -> str:
    """The stable id of a file: hex SHA-1 of its path bytes relative to the source."""
    return hashlib.sha1(rel).hexdigest()


@dataclass
class Entry:
    """One file found (or one place where a file was expected, for ``missing_image``)."""

    rel: bytes
    abspath: bytes
    category: str | None = None
    user: str | None = None
    board: str | None = None
    pin: str | None = None
    #: A status known from the listing alone: outside_root, missing_image, bad_metadata, no_category,
    #: conflict (a table listing one path under two categories). ``None``: up to decoding and cleaning.
    status: str | None = None
    detail: str = ""
    #: Whether there is a file to decode (False for outside_root, missing_image, a bare bad boards.json).
    decode: bool = True
    size: int | None = None
    mtime_ns: int | None = None

    @property
    def image_id(self) -> str:
        return image_id_of(self.rel)

    @property
    def path(self) -> str:
        return display(self.rel)


@dataclass
class Listing:
    """Everything a scan found, with what it skipped on purpose."""

    layout: str
    root: bytes
    entries: list[Entry] = field(default_factory=list)
    #: Folders not taken as images: named like an image file, symlink loops, folders inside pin folders.
    ignored_dirs: list[str] = field(default_factory=list)
    #: Files outside the layout (top-level files of a folders dataset, hidden files, sockets, ...).
    ignored_files: int = 0
    #: (relative path, size, mtime_ns) of the metadata files read (boards.json, pin.json, the table).
    metadata_files: list[tuple[bytes, int, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        """A cheap digest of the listing (paths, sizes, mtimes, labels): equal digests mean nothing changed."""
        digest = hashlib.sha256()
        digest.update(self.layout.encode() + b"\0" + self.root + b"\0")
        for e in sorted(self.entries, key=lambda item: item.rel):
            fields = (e.rel, e.abspath, e.category, e.user, e.board, e.pin, e.status, e.detail, e.decode, e.size, e.mtime_ns)
            digest.update(repr(fields).encode("utf-8", "backslashreplace") + b"\n")
        for item in sorted(self.metadata_files):
            digest.update(repr(item).encode() + b"\n")
        digest.update(repr((sorted(self.ignored_dirs), self.ignored_files)).encode("utf-8", "backslashreplace"))
        return digest.hexdigest()


def detect_layout(source: str | os.PathLike) -> str:
    """``table`` for a CSV/Parquet file, ``crawl`` when a subfolder holds ``boards.json``, ``gallery-dl`` for
    gallery-dl's Pinterest downloads (see :func:`gallery_dl_base`), else ``folders``."""
    path = Path(source)
    try:
        info = os.stat(path)
    except OSError:
        raise PintopicError(f"source {source} does not exist") from None
    if stat.S_ISREG(info.st_mode):
        if path.suffix.lower() in TABLE_SUFFIXES:
            return "table"
        raise PintopicError(f"{source} is a file but not a CSV or Parquet table (.csv, .parquet)")
    if not stat.S_ISDIR(info.st_mode):
        raise PintopicError(f"source {source} is neither a folder nor a table file ({file_kind(info.st_mode)})")
    try:
        children = sorted(os.scandir(os.fsencode(path)), key=lambda item: item.name)
    except OSError as error:
        raise PintopicError(f"cannot list {source}: {error.strerror or error}") from None
    for child in children:
        if child.name.startswith(b".") or not child.is_dir():
            continue
        if os.path.isfile(os.path.join(child.path, b"boards.json")):
            return "crawl"
    base = gallery_dl_base(os.fsencode(path))
    if os.path.basename(base.rstrip(b"/")) == b"pinterest" and _holds_gallery_dl_files(base):
        return "gallery-dl"
    return "folders"


def scan(source: str | os.PathLike, layout: str, categories: CategoryMap | None = None, *,
         skip_folders: Sequence[str | os.PathLike] = (), max_metadata_bytes: int = MAX_METADATA_BYTES) -> Listing:
    """List ``source`` in the given layout (see :func:`detect_layout` for ``auto``).

    ``categories`` labels the boards the source leaves without a category (crawl and gallery-dl layouts).
    Folders in ``skip_folders`` (the run folder, when it lies inside the source) are never entered;
    metadata files over ``max_metadata_bytes`` are ``bad_metadata``.
    """
    if layout == "auto":
        layout = detect_layout(source)
    if layout not in LAYOUTS:
        raise PintopicError(f"unknown layout {layout!r}; use one of auto, {', '.join(LAYOUTS)}")
    if layout == "table":
        return scan_table(source)
    if not Path(source).is_dir():
        raise PintopicError(f"the {layout} layout needs a folder; {source} is not one")
    options = {"skip_folders": skip_folders, "max_metadata_bytes": max_metadata_bytes}
    if layout == "gallery-dl":
        return scan_gallery_dl(source, categories, **options)
    if layout == "crawl":
        return scan_crawl(source, categories, **options)
    return scan_folders(source, skip_folders=skip_folders)


# ---------------------------------------------------------------------------------------------
# Walking: without recursion, each real folder once, symlinks followed inside the root and recorded as
# outside_root when they lead out.


def _inside(real: bytes, root: bytes) -> bool:
    return real == root or real.startswith(root.rstrip(b"/") + b"/")


def _join(rel: bytes, name: bytes) -> bytes:
    return name if not rel else rel + b"/" + name


class _Walker:
    """Lists a tree without recursion (any depth), entering each real folder once, by device and inode.

    Folders reached through a symlink are entered after every other folder, in path order, so a folder
    reachable both ways is listed under its real path, symlink chains cannot multiply the rows, and the
    outcome does not depend on the order the file system lists entries in.
    """

    def __init__(self, listing: Listing, skip_folders: Sequence[str | os.PathLike] = ()):
        self.listing = listing
        self.root = listing.root
        #: (st_dev, st_ino) of every folder entered -> the path it was listed under (None: a skipped folder)
        self.seen: dict[tuple[int, int], bytes | None] = {}
        self._deferred: list[tuple[bytes, int, bytes, Callable[[], None]]] = []
        self._order = itertools.count()
        for folder in skip_folders:
            with contextlib.suppress(OSError):
                info = os.stat(folder)
                self.seen[(info.st_dev, info.st_ino)] = None
        self.enter(self.root, b"")

    def children(self, directory: bytes) -> list[os.DirEntry]:
        """The entries of ``directory`` sorted by name, hidden ones (``.name``) left out; hidden files are counted."""
        try:
            with os.scandir(directory) as iterator:
                entries = sorted(iterator, key=lambda item: item.name)
        except OSError as error:
            self.listing.notes.append(f"cannot list {display(directory)}: {error.strerror or error}")
            return []
        visible = [entry for entry in entries if not entry.name.startswith(b".")]
        self.listing.ignored_files += sum(1 for entry in entries if entry.name.startswith(b".") and not entry.is_dir())
        return visible

    def kind(self, entry: os.DirEntry) -> tuple[str, object]:
        """('file', stat) | ('dir', real path) | ('outside', real path) | ('broken' or 'loop', target) | ('other', None)."""
        real = None
        if entry.is_symlink():
            real = os.path.realpath(entry.path)
            if not _inside(real, self.root):
                return "outside", real
            try:
                info = os.stat(entry.path)
            except OSError as error:
                return ("loop" if error.errno == errno.ELOOP else "broken"), os.readlink(entry.path)
        else:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                return "broken", entry.path
        if stat.S_ISDIR(info.st_mode):
            return "dir", real or entry.path
        if stat.S_ISREG(info.st_mode):
            return "file", info
        return "other", None

    def file_entry(self, entry: os.DirEntry, rel: bytes, **labels) -> Entry | None:
        """An Entry for a directory entry that should be an image file, or None for a folder/special file."""
        kind, info = self.kind(entry)
        if kind == "file":
            return Entry(rel, entry.path, size=info.st_size, mtime_ns=info.st_mtime_ns, **labels)
        if kind == "outside":
            return Entry(rel, entry.path, status="outside_root", decode=False,
                         detail=f"symlink to {display(info)}, outside the source folder", **labels)
        if kind in ("broken", "loop"):
            what = "symlink loop" if kind == "loop" else "broken symlink"
            return Entry(rel, entry.path, status="missing_image", decode=False, detail=f"{what} (to {display(info)})", **labels)
        return None

    def enter(self, path: bytes, rel: bytes) -> bool:
        """True the first time a real folder is reached (list it now); otherwise record why it is skipped."""
        try:
            info = os.stat(path)
        except OSError as error:
            self.listing.notes.append(f"cannot enter {display(rel or path)}: {error.strerror or error}")
            return False
        key = (info.st_dev, info.st_ino)
        if key not in self.seen and rel and is_run_folder(path):
            self.seen[key] = None  # another run's outputs (a decode cache of PNG copies ...) are not input either
        if key not in self.seen:
            self.seen[key] = rel
            return True
        first = self.seen[key]
        if first is None:
            reason = "a pintopic run folder: its outputs are not input"
        elif first == b"" or rel.startswith(first + b"/"):
            reason = "symlink loop"
        else:
            reason = f"same folder as {display(first)}, listed once"
        self.listing.ignored_dirs.append(f"{display(rel)} ({reason})")
        return False

    def subfolder(self, entry: os.DirEntry, rel: bytes, list_it: Callable[[], None]) -> None:
        """List a child folder with ``list_it()``: now when it is a real folder, after every real folder when symlinked."""
        if entry.is_symlink():
            heapq.heappush(self._deferred, (rel, next(self._order), entry.path, list_it))
        elif self.enter(entry.path, rel):
            list_it()

    def finish(self) -> None:
        """List the symlinked folders whose real folder has not been listed, in path order."""
        while self._deferred:
            rel, _, path, list_it = heapq.heappop(self._deferred)
            if self.enter(path, rel):
                list_it()

    def walk_files(self, directory: bytes, rel: bytes, **labels) -> None:
        """Add an Entry for every file below ``directory`` (an entered folder), depth first, with an explicit stack."""
        stack = [(directory, rel)]
        while stack:
            folder, folder_rel = stack.pop()
            below = []
            for child in self.children(folder):
                child_rel = _join(folder_rel, child.name)
                kind, _ = self.kind(child)
                if kind == "dir":
                    if child.name.lower().endswith(IMAGE_SUFFIXES):
                        self.listing.ignored_dirs.append(f"{display(child_rel)} (a folder named like an image)")
                    if child.is_symlink():
                        self.subfolder(child, child_rel, functools.partial(self.walk_files, child.path, child_rel, **labels))
                    elif self.enter(child.path, child_rel):
                        below.append((child.path, child_rel))
                elif kind == "other":
                    self.listing.ignored_files += 1
                else:
                    self.listing.entries.append(self.file_entry(child, child_rel, **labels))
            stack.extend(reversed(below))


def _root_of(source: str | os.PathLike) -> bytes:
    return os.path.realpath(os.fsencode(source))


def list_image_files(folder: str | os.PathLike | bytes) -> list[Entry]:
    """Every file below ``folder`` whose name has an image suffix, found as ingest finds them (hidden files
    skipped, each real folder once, symlinks leading out of ``folder`` marked ``outside_root``), sorted by path."""
    listing = Listing("folders", _root_of(folder))
    walker = _Walker(listing)
    walker.walk_files(os.fsencode(folder), b"")
    walker.finish()
    return sorted((entry for entry in listing.entries if entry.rel.lower().endswith(IMAGE_SUFFIXES)),
                  key=lambda entry: entry.rel)


# ---------------------------------------------------------------------------------------------
# folders: SOURCE/<category>/**/<image>


def scan_folders(source: str | os.PathLike, *, skip_folders: Sequence[str | os.PathLike] = ()) -> Listing:
    listing = Listing("folders", _root_of(source))
    walker = _Walker(listing, skip_folders)
    for top in walker.children(listing.root):
        name = top.name
        kind, info = walker.kind(top)
        category = normalize_category(display(name))
        if kind == "outside":
            listing.entries.append(Entry(name, top.path, category=category, status="outside_root", decode=False,
                                         detail=f"symlinked folder leading to {display(info)}, outside the source folder"))
        elif kind == "dir":
            walker.subfolder(top, name, functools.partial(walker.walk_files, top.path, name, category=category))
        else:
            listing.ignored_files += 1  # a file directly in SOURCE has no category folder
    walker.finish()
    return listing


# ---------------------------------------------------------------------------------------------
# crawl: SOURCE/<user>/boards.json + SOURCE/<user>/<board slug>/<pin id>/{pin.json, image}


def _stat_key(path: bytes, rel: bytes) -> tuple[bytes, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return rel, info.st_size, info.st_mtime_ns


@dataclass(frozen=True)
class Unusable:
    """A boards.json entry that cannot label its board (listed twice differently, a category that is not text)."""

    detail: str


def read_metadata(path: bytes, root: bytes, max_bytes: int = MAX_METADATA_BYTES):
    """``(value, None)`` for a metadata JSON file, or ``(None, (status, detail))`` when it cannot be used.

    A symlink leading out of ``root`` is never opened (``outside_root``, like an image); a pipe, a device,
    a file over ``max_bytes`` or anything that does not parse (nesting included) is ``bad_metadata``.
    A missing file gives ``(None, None)``.
    """
    name = display(os.path.basename(path))
    if os.path.islink(path):
        real = os.path.realpath(path)
        if not _inside(real, root):
            return None, ("outside_root", f"{name} is a symlink to {display(real)}, outside the source folder; not read")
    try:
        return read_json_file(path, max_bytes=max_bytes, what=name), None
    except UnreadableFileError as error:
        if error.kind == "missing":
            return None, None
        reason = error.reason if error.reason.startswith(name) else f"{name}: {error.reason}"
        if error.kind == "too_large":
            reason += " (--max-metadata-bytes)"
        return None, ("bad_metadata", reason)


def read_boards(path: bytes, root: bytes, max_bytes: int = MAX_METADATA_BYTES, categories: CategoryMap | None = None,
                owner: str | None = None):
    """Parse a user's boards.json: ``({slug bytes: category, None or Unusable}, (status, detail) or None, skipped entries)``.

    Accepts a list of boards or ``{"boards": [...]}``. A category must be text (or absent); a slug listed
    twice with different categories, or with a category of another type, is :class:`Unusable`. A board
    without a category takes the one ``categories`` gives its ``id``, or ``owner`` + its ``name`` (the slug
    when it has no name).
    """
    data, problem = read_metadata(path, root, max_bytes)
    if problem:
        return None, problem, 0
    if data is None:
        return None, ("bad_metadata", "the user folder has no boards.json"), 0
    if isinstance(data, dict) and isinstance(data.get("boards"), list):
        data = data["boards"]
    if not isinstance(data, list):
        return None, ("bad_metadata", "boards.json is not a list of boards"), 0
    boards: dict[bytes, str | None | Unusable] = {}
    skipped = 0
    for item in data:
        slug = item.get("slug") if isinstance(item, dict) else None
        if not isinstance(slug, str) or not slug.strip():
            skipped += 1
            continue
        key = os.fsencode(slug.strip())
        category = item.get("category")
        if category is not None and not isinstance(category, str):
            label: str | None | Unusable = Unusable(f"board {slug.strip()!r} has a category that is not text in "
                                                    f"boards.json ({json.dumps(category)[:80]})")
        else:
            label = normalize_category(category)
            if label is None and categories is not None:
                label = categories.lookup(item.get("id"), owner, item.get("name") or slug)
        if key in boards and boards[key] != label:
            label = Unusable(f"board {slug.strip()!r} is listed twice in boards.json with different categories")
        boards[key] = label
    return boards, None, skipped


def _read_pin(path: bytes, root: bytes, max_bytes: int) -> tuple[str, str] | None:
    """None when pin.json is absent or a JSON object; else ``(status, detail)``."""
    data, problem = read_metadata(path, root, max_bytes)
    if problem or data is None or isinstance(data, dict):
        return problem
    return "bad_metadata", "pin.json is not a JSON object"


def scan_crawl(source: str | os.PathLike, categories: CategoryMap | None = None, *,
               skip_folders: Sequence[str | os.PathLike] = (), max_metadata_bytes: int = MAX_METADATA_BYTES) -> Listing:
    listing = Listing("crawl", _root_of(source))
    walker = _Walker(listing, skip_folders)
    for user_entry in walker.children(listing.root):
        kind, info = walker.kind(user_entry)
        user_rel, user = user_entry.name, display(user_entry.name)
        if kind == "outside":
            listing.entries.append(Entry(user_rel, user_entry.path, user=user, status="outside_root", decode=False,
                                         detail=f"symlinked user folder leading to {display(info)}, outside the source folder"))
        elif kind != "dir":
            listing.ignored_files += 1
        else:
            walker.subfolder(user_entry, user_rel, functools.partial(
                _scan_user, walker, user_entry.path, user_rel, user, max_metadata_bytes, categories))
    walker.finish()
    return listing


def _board_labels(boards, problem: tuple[str, str] | None, name: bytes) -> tuple[str | None, str | None, str]:
    """``(category, status, detail)`` of a board folder from its user's boards.json."""
    slug = display(name)
    if problem:
        return None, *problem
    if name not in boards:
        return None, "no_category", f"board {slug!r} is not listed in boards.json"
    label = boards[name]
    if isinstance(label, Unusable):
        return None, "bad_metadata", label.detail
    if label is None:
        return None, "no_category", f"board {slug!r} has no category in boards.json"
    return label, None, ""


def _scan_user(walker: _Walker, user_dir: bytes, user_rel: bytes, user: str, max_metadata_bytes: int,
               categories: CategoryMap | None) -> None:
    listing = walker.listing
    boards_path = os.path.join(user_dir, b"boards.json")
    key = _stat_key(boards_path, _join(user_rel, b"boards.json"))
    if key:
        listing.metadata_files.append(key)
    boards, problem, skipped = read_boards(boards_path, walker.root, max_metadata_bytes, categories, user)
    if skipped:
        listing.notes.append(f"{user}/boards.json: {skipped} entries without a slug were skipped")
    rows_before = len(listing.entries)
    for board_entry in walker.children(user_dir):
        name = board_entry.name
        if name == b"boards.json":
            continue
        board_rel, slug = _join(user_rel, name), display(name)
        kind, info = walker.kind(board_entry)
        if kind == "outside":
            listing.entries.append(Entry(board_rel, board_entry.path, user=user, board=slug, status="outside_root", decode=False,
                                         detail=f"symlinked board folder leading to {display(info)}, outside the source folder"))
        elif kind != "dir":
            listing.ignored_files += 1  # stray files next to boards.json
        else:
            category, status, detail = _board_labels(boards, problem, name)
            labels = dict(user=user, board=slug, category=category)
            walker.subfolder(board_entry, board_rel, functools.partial(
                _scan_board, walker, board_entry.path, board_rel, labels, status, detail, max_metadata_bytes))
    if problem and len(listing.entries) == rows_before and os.path.lexists(boards_path):
        listing.entries.append(Entry(_join(user_rel, b"boards.json"), boards_path, user=user, status=problem[0],
                                     detail=problem[1], decode=False))


def _scan_board(walker: _Walker, board_dir: bytes, board_rel: bytes, labels: dict, status: str | None, detail: str,
                max_metadata_bytes: int) -> None:
    listing = walker.listing
    for pin_entry in walker.children(board_dir):
        pin_name = pin_entry.name
        pin_kind, _ = walker.kind(pin_entry)
        if pin_kind == "dir":
            pin_rel = _join(board_rel, pin_name)
            walker.subfolder(pin_entry, pin_rel, functools.partial(
                _scan_pin, walker, pin_entry.path, pin_rel, display(pin_name), labels, status, detail, max_metadata_bytes))
        elif pin_kind == "other" or pin_name.lower().endswith(_SIDECAR_SUFFIXES):
            listing.ignored_files += 1
        else:  # an image directly in the board folder: a pin without its own folder
            stem = pin_name.rsplit(b".", 1)[0] if b"." in pin_name[1:] else pin_name
            row = walker.file_entry(pin_entry, _join(board_rel, pin_name), pin=display(stem), **labels)
            if row is not None:
                _apply_status(row, status, detail)
                listing.entries.append(row)


def _apply_status(row: Entry, status: str | None, detail: str) -> None:
    """Give a listing-level status to a row that has none of its own (its own, e.g. outside_root, wins)."""
    if status and row.status is None:
        row.status, row.detail = status, detail


def _scan_pin(walker: _Walker, pin_dir: bytes, pin_rel: bytes, pin: str, labels: dict, status: str | None, detail: str,
              max_metadata_bytes: int) -> None:
    listing = walker.listing
    pin_problem = None
    rows: list[Entry] = []
    for child in walker.children(pin_dir):
        name = child.name
        child_rel = _join(pin_rel, name)
        if name == b"pin.json":
            key = _stat_key(child.path, child_rel)
            if key:
                listing.metadata_files.append(key)
            pin_problem = _read_pin(child.path, walker.root, max_metadata_bytes)
            continue
        kind, _ = walker.kind(child)
        if kind == "dir":
            reason = "a folder named like an image" if name.lower().endswith(IMAGE_SUFFIXES) else "a folder inside a pin folder"
            listing.ignored_dirs.append(f"{display(child_rel)} ({reason})")
            continue
        if kind == "other" or name.lower().endswith(_SIDECAR_SUFFIXES):
            listing.ignored_files += 1
            continue
        row = walker.file_entry(child, child_rel, pin=pin, **labels)
        if row is not None:
            rows.append(row)
    if not rows:
        note = "the pin folder has no image file" + (f"; {pin_problem[1]}" if pin_problem else "")
        listing.entries.append(Entry(pin_rel, pin_dir, pin=pin, status="missing_image", detail=note, decode=False, **labels))
        return
    board_problem = (status, detail) if status in ("outside_root", "bad_metadata") else None
    for row in rows:
        _apply_status(row, *(board_problem or pin_problem or (status, detail)))
    listing.entries.extend(rows)


# ---------------------------------------------------------------------------------------------
# gallery-dl: [gallery-dl/]pinterest/<owner>/<board name>/[<section>/]pinterest_<pin id>[_<media id>].<ext>
# with an optional metadata file <file>.json (gallery-dl's --write-metadata) beside each file.

#: A file gallery-dl names after its pin: ``pinterest_<pin id>[_<media id>].<ext>``.
_GALLERY_DL_FILE = re.compile(rb"^pinterest_(\d+)(?:_[^./]*)?\.[A-Za-z0-9]+$")
#: Files gallery-dl leaves that are not pins' images: metadata, partial downloads, story text blocks.
_GALLERY_DL_SKIPPED = (b".json", b".part", b".txt", b".mp4", b".m3u8", b".mp3", b".m4a")


def gallery_dl_base(source: bytes) -> bytes:
    """The folder holding the owners' folders: ``SOURCE/gallery-dl/pinterest``, ``SOURCE/pinterest`` or SOURCE.

    Auto-detection needs that folder to be named ``pinterest`` (gallery-dl's own name for it), so a folders
    dataset is never mistaken for one; ``--layout gallery-dl`` takes SOURCE as the owners' folder otherwise.
    """
    for candidate in (os.path.join(source, b"gallery-dl", b"pinterest"), os.path.join(source, b"pinterest")):
        if os.path.isdir(candidate):
            return candidate
    return source


def _holds_gallery_dl_files(base: bytes) -> bool:
    """Whether ``base/<owner>/<board>/`` (or a section below it) holds a ``pinterest_<id>.<ext>`` file."""
    def subdirs(folder: bytes):
        try:
            with os.scandir(folder) as iterator:
                return [entry for entry in iterator if entry.is_dir() and not entry.name.startswith(b".")]
        except OSError:
            return []

    for owner in subdirs(base):
        for board in subdirs(owner.path):
            for folder in [board] + subdirs(board.path):
                try:
                    names = os.listdir(folder.path)
                except OSError:
                    continue
                if any(_GALLERY_DL_FILE.match(name) for name in names):
                    return True
    return False


def scan_gallery_dl(source: str | os.PathLike, categories: CategoryMap | None = None, *,
                    skip_folders: Sequence[str | os.PathLike] = (), max_metadata_bytes: int = MAX_METADATA_BYTES) -> Listing:
    """Every image under the owners' board folders; user, board and pin from the folders, file name and metadata."""
    listing = Listing("gallery-dl", _root_of(source))
    walker = _Walker(listing, skip_folders)
    base = gallery_dl_base(listing.root)
    base_rel = os.path.relpath(base, listing.root) if base != listing.root else b""
    for owner_entry in walker.children(base):
        if walker.kind(owner_entry)[0] != "dir":
            listing.ignored_files += 1
            continue
        owner_rel = _join(base_rel, owner_entry.name)
        for board_entry in walker.children(owner_entry.path):
            if walker.kind(board_entry)[0] != "dir":
                listing.ignored_files += 1
                continue
            board_rel = _join(owner_rel, board_entry.name)
            labels = {"user": display(owner_entry.name), "board": display(board_entry.name)}
            walker.subfolder(board_entry, board_rel, functools.partial(walker.walk_files, board_entry.path, board_rel, **labels))
    walker.finish()
    rows, listing.entries = listing.entries, []
    for row in rows:
        name = os.path.basename(row.rel)
        if name.lower().endswith(_GALLERY_DL_SKIPPED):
            listing.ignored_files += not name.lower().endswith(b".json")  # metadata is read with its image
            continue
        _label_gallery_dl_file(listing, row, name, categories, max_metadata_bytes)
        listing.entries.append(row)
    return listing


def _label_gallery_dl_file(listing: Listing, row: Entry, name: bytes, categories: CategoryMap | None,
                           max_metadata_bytes: int) -> None:
    """Pin id, category (the board's own, else the map's) and metadata status of one gallery-dl file."""
    match = _GALLERY_DL_FILE.match(name)
    row.pin = display(match.group(1)) if match else display(name.rsplit(b".", 1)[0])
    metadata, error = None, None
    for candidate in (row.abspath + b".json", row.abspath.rsplit(b".", 1)[0] + b".json"):
        if os.path.lexists(candidate):
            key = _stat_key(candidate, os.path.relpath(candidate, listing.root))
            if key:
                listing.metadata_files.append(key)
            metadata, error = read_metadata(candidate, listing.root, max_metadata_bytes)
            if error is None and metadata is not None and not isinstance(metadata, dict):
                error = ("bad_metadata", f"{display(os.path.basename(candidate))} is not a JSON object")
            break
    if error:
        _apply_status(row, *error)
        return
    board = metadata.get("board") if metadata else None
    board = board if isinstance(board, dict) else {}
    owner = board.get("owner") if isinstance(board.get("owner"), dict) else {}
    if metadata and isinstance(metadata.get("id"), (str, int)) and str(metadata["id"]).isdigit():
        row.pin = str(metadata["id"])
    own = board.get("category")  # the pin's top-level "category" is gallery-dl's extractor name, never a label
    if own is not None and not isinstance(own, str):
        _apply_status(row, "bad_metadata", f"the board's category in {display(os.path.basename(row.abspath))}.json "
                                           f"is not text ({json.dumps(own)[:80]})")
        return
    row.category = normalize_category(own)
    if row.category is None and categories is not None:
        row.category = categories.lookup(board.get("id"), owner.get("username") or row.user, board.get("name") or row.board)
    if row.category is None:
        source = f"in {display(os.path.basename(row.abspath))}.json" if metadata else "without metadata"
        given = f"nor in {categories.source}" if categories is not None else "and no --categories map was given"
        _apply_status(row, "no_category", f"board {row.user}/{row.board} has no category {source}, {given}")


# ---------------------------------------------------------------------------------------------
# table: a CSV or Parquet file with path, category and optional user, board, pin columns


def _cell(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN
        return None
    if isinstance(value, bytes):
        value = display(value)
    text = str(value).strip()
    return text or None


def _not_text(value) -> bool:
    """A table cell that cannot be a category name (a list, a mapping: Parquet's nested columns)."""
    return isinstance(value, (list, tuple, dict, set)) or getattr(value, "ndim", 0) > 0


def read_table(path: Path):
    """The table's rows as text (CSV cells are never turned into numbers or NaN: ``NA`` is a name); a pipe,
    a device or a damaged file is one :class:`PintopicError`."""
    try:
        frame = read_csv_text(path) if path.suffix.lower() == ".csv" else read_parquet_table(path)
    except UnreadableFileError as error:
        raise PintopicError(f"cannot read the table {error}") from None
    except Exception as error:  # noqa: BLE001 - pandas/pyarrow raise many types (and RecursionError) for malformed files
        raise PintopicError(f"cannot read the table {path}: {one_line(error)[:300]}") from None
    frame.columns = [str(column).strip().lower() for column in frame.columns]
    missing = [column for column in ("path", "category") if column not in frame.columns]
    if missing:
        raise PintopicError(f"the table {path} lacks the column(s) {', '.join(missing)} (needs path and category)")
    return frame


def scan_table(source: str | os.PathLike) -> Listing:
    table_path = Path(os.path.realpath(source))
    base = os.fsencode(table_path.parent)
    listing = Listing("table", base)
    info = os.stat(table_path)
    listing.metadata_files.append((os.fsencode(table_path.name), info.st_size, info.st_mtime_ns))
    frame = read_table(table_path)
    optional = {column: frame[column].tolist() if column in frame.columns else None for column in ("user", "board", "pin")}
    by_rel: dict[bytes, Entry] = {}
    categories_by_rel: dict[bytes, list[str | None]] = {}
    empty_paths = 0
    for index, raw in enumerate(frame["path"].tolist()):
        if raw is None or (isinstance(raw, float) and raw != raw) or not str(raw if not isinstance(raw, bytes) else raw.decode("utf-8", "replace")).strip():
            empty_paths += 1
            continue
        given = raw if isinstance(raw, bytes) else os.fsencode(str(raw).strip())
        abspath = os.path.normpath(given if os.path.isabs(given) else os.path.join(base, given))
        rel = os.path.relpath(abspath, base) if _inside(abspath, base) else abspath
        raw_category = frame["category"].iat[index]
        category = None if _not_text(raw_category) else normalize_category(_cell(raw_category))
        categories_by_rel.setdefault(rel, []).append(category)
        if rel in by_rel:
            continue
        labels = {column: _cell(values[index]) if values is not None else None for column, values in optional.items()}
        row = Entry(rel, abspath, category=category, **labels)
        try:
            info = os.stat(abspath)
        except OSError:
            row.status, row.detail, row.decode = "missing_image", "listed in the table but not found", False
        else:
            if stat.S_ISREG(info.st_mode):
                row.size, row.mtime_ns = info.st_size, info.st_mtime_ns
            else:
                row.status, row.detail, row.decode = "missing_image", "listed in the table but not a regular file", False
        if row.status is None and _not_text(raw_category):
            row.status, row.detail = "bad_metadata", f"the table's category is not text ({str(raw_category)[:80]})"
        elif row.status is None and category is None:
            row.status, row.detail = "no_category", "the table gives no category"
        by_rel[rel] = row
    repeated = 0
    for rel, categories in categories_by_rel.items():
        if len(categories) < 2:
            continue
        repeated += len(categories) - 1
        distinct = sorted({c for c in categories if c is not None})
        row = by_rel[rel]
        if len(distinct) > 1 and row.status is None:
            row.category = None
            row.status, row.detail = "conflict", f"listed {len(categories)} times with categories {', '.join(distinct)}"
    if repeated:
        listing.notes.append(f"{repeated} table rows repeat a path listed earlier (one manifest row per file)")
    if empty_paths:
        listing.notes.append(f"{empty_paths} table rows have an empty path and were skipped")
    listing.entries = list(by_rel.values())
    return listing
