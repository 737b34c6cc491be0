"""Finding the files of a collection: the crawl, gallery-dl, folders and table layouts, and auto-detection.

A scan only lists and stats files and reads the small metadata files (``boards.json``, ``pin.json``,
the table); it never opens an image. Paths are handled as bytes end to end, so file names that are
not valid UTF-8 survive: ``Entry.rel`` (the path relative to the source, ``/``-separated) gives the
``image_id`` and ``Entry.abspath`` is the exact path to open.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pintopic.categories import CategoryMap, normalize_category
from pintopic.errors import PintopicError

LAYOUTS = ("crawl", "gallery-dl", "folders", "table")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")

#: Names a directory can have that make it look like an image file (counted as ``ignored_dirs``).
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
    if path.is_file():
        if path.suffix.lower() in TABLE_SUFFIXES:
            return "table"
        raise PintopicError(f"{source} is a file but not a CSV or Parquet table (.csv, .parquet)")
    if not path.is_dir():
        raise PintopicError(f"source {source} does not exist")
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


def scan(source: str | os.PathLike, layout: str, categories: CategoryMap | None = None) -> Listing:
    """List ``source`` in the given layout (see :func:`detect_layout` for ``auto``).

    ``categories`` labels the boards the source leaves without a category (crawl and gallery-dl layouts).
    """
    if layout == "auto":
        layout = detect_layout(source)
    if layout not in LAYOUTS:
        raise PintopicError(f"unknown layout {layout!r}; use one of auto, {', '.join(LAYOUTS)}")
    if layout == "table":
        return scan_table(source)
    if not Path(source).is_dir():
        raise PintopicError(f"the {layout} layout needs a folder; {source} is not one")
    if layout == "gallery-dl":
        return scan_gallery_dl(source, categories)
    return scan_crawl(source, categories) if layout == "crawl" else scan_folders(source)


# ---------------------------------------------------------------------------------------------
# Walking with symlinks: followed inside the root, recorded as outside_root when they lead out.


def _inside(real: bytes, root: bytes) -> bool:
    return real == root or real.startswith(root.rstrip(b"/") + b"/")


def _join(rel: bytes, name: bytes) -> bytes:
    return name if not rel else rel + b"/" + name


class _Walker:
    def __init__(self, listing: Listing):
        self.listing = listing
        self.root = listing.root

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
        """('file', stat) | ('dir', real path) | ('outside', real path) | ('broken', target) | ('other', None)."""
        real = None
        if entry.is_symlink():
            real = os.path.realpath(entry.path)
            if not _inside(real, self.root):
                return "outside", real
            try:
                info = os.stat(entry.path)
            except OSError:
                return "broken", real
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
        if kind == "broken":
            return Entry(rel, entry.path, status="missing_image", decode=False,
                         detail=f"broken symlink (to {display(os.readlink(entry.path)) if entry.is_symlink() else '?'})", **labels)
        return None

    def walk_files(self, directory: bytes, rel: bytes, stack: tuple, **labels):
        """Every file below ``directory`` (sorted, depth first), following symlinked folders inside the root."""
        for child in self.children(directory):
            name = child.name
            child_rel = _join(rel, name)
            kind, info = self.kind(child)
            if kind == "dir":
                real = os.path.realpath(child.path)
                if real in stack:
                    self.listing.ignored_dirs.append(f"{display(child_rel)} (symlink loop)")
                    continue
                if name.lower().endswith(IMAGE_SUFFIXES):
                    self.listing.ignored_dirs.append(f"{display(child_rel)} (a folder named like an image)")
                yield from self.walk_files(child.path, child_rel, stack + (real,), **labels)
                continue
            if kind == "other":
                self.listing.ignored_files += 1
                continue
            yield self.file_entry(child, child_rel, **labels)


def _root_of(source: str | os.PathLike) -> bytes:
    return os.path.realpath(os.fsencode(source))


# ---------------------------------------------------------------------------------------------
# folders: SOURCE/<category>/**/<image>


def scan_folders(source: str | os.PathLike) -> Listing:
    listing = Listing("folders", _root_of(source))
    walker = _Walker(listing)
    for top in walker.children(listing.root):
        name = top.name
        kind, info = walker.kind(top)
        category = normalize_category(display(name))
        if kind == "outside":
            listing.entries.append(Entry(name, top.path, category=category, status="outside_root", decode=False,
                                         detail=f"symlinked folder leading to {display(info)}, outside the source folder"))
        elif kind == "dir":
            real = os.path.realpath(top.path)
            listing.entries.extend(walker.walk_files(top.path, name, (listing.root, real), category=category))
        else:
            listing.ignored_files += 1  # a file directly in SOURCE has no category folder
    return listing


# ---------------------------------------------------------------------------------------------
# crawl: SOURCE/<user>/boards.json + SOURCE/<user>/<board slug>/<pin id>/{pin.json, image}


def _stat_key(path: bytes, rel: bytes) -> tuple[bytes, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return rel, info.st_size, info.st_mtime_ns


def read_boards(path: bytes, categories: CategoryMap | None = None,
                owner: str | None = None) -> tuple[dict[bytes, str | None] | None, str | None, int]:
    """Parse a user's boards.json: ({slug bytes: category or None}, error, skipped entries).

    Accepts a list of boards or ``{"boards": [...]}``. A slug listed twice with different categories
    maps to the error marker ``"\\0conflict"``. A board without a category takes the one ``categories``
    gives its ``id``, or ``owner`` + its ``name`` (the slug when it has no name).
    """
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        return None, "the user folder has no boards.json", 0
    except (ValueError, UnicodeDecodeError) as error:
        return None, f"boards.json is not valid JSON ({error})", 0
    except OSError as error:
        return None, f"boards.json cannot be read ({error.strerror or error})", 0
    if isinstance(data, dict) and isinstance(data.get("boards"), list):
        data = data["boards"]
    if not isinstance(data, list):
        return None, "boards.json is not a list of boards", 0
    boards: dict[bytes, str | None] = {}
    skipped = 0
    for item in data:
        slug = item.get("slug") if isinstance(item, dict) else None
        if not isinstance(slug, str) or not slug.strip():
            skipped += 1
            continue
        category = item.get("category")
        category = normalize_category(category if isinstance(category, str) or category is None else str(category))
        if category is None and categories is not None:
            category = categories.lookup(item.get("id"), owner, item.get("name") or slug)
        key = os.fsencode(slug.strip())
        if key in boards and boards[key] != category:
            boards[key] = "\0conflict"
        else:
            boards[key] = category
    return boards, None, skipped


def _read_json_object(path: bytes) -> tuple[dict | None, str | None]:
    """(the object, None), (None, None) when the file is absent, or (None, what is wrong with it)."""
    name = display(os.path.basename(path))
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        return None, None
    except (ValueError, UnicodeDecodeError) as error:
        return None, f"{name} is not valid JSON ({error})"
    except OSError as error:
        return None, f"{name} cannot be read ({error.strerror or error})"
    if not isinstance(data, dict):
        return None, f"{name} is not a JSON object"
    return data, None


def _read_pin(path: bytes) -> str | None:
    """None when pin.json is absent or a JSON object; else what is wrong with it."""
    return _read_json_object(path)[1]


def scan_crawl(source: str | os.PathLike, categories: CategoryMap | None = None) -> Listing:
    listing = Listing("crawl", _root_of(source))
    walker = _Walker(listing)
    for user_entry in walker.children(listing.root):
        kind, info = walker.kind(user_entry)
        user_rel, user = user_entry.name, display(user_entry.name)
        if kind == "outside":
            listing.entries.append(Entry(user_rel, user_entry.path, user=user, status="outside_root", decode=False,
                                         detail=f"symlinked user folder leading to {display(info)}, outside the source folder"))
            continue
        if kind != "dir":
            listing.ignored_files += 1
            continue
        _scan_user(walker, user_entry.path, user_rel, user, categories)
    return listing


def _scan_user(walker: _Walker, user_dir: bytes, user_rel: bytes, user: str, categories: CategoryMap | None) -> None:
    listing = walker.listing
    boards_path = os.path.join(user_dir, b"boards.json")
    key = _stat_key(boards_path, _join(user_rel, b"boards.json"))
    if key:
        listing.metadata_files.append(key)
    boards, boards_error, skipped = read_boards(boards_path, categories, user)
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
            continue
        if kind != "dir":
            listing.ignored_files += 1  # stray files next to boards.json
            continue
        category, status, detail = None, None, ""
        if boards_error:
            status, detail = "bad_metadata", boards_error
        elif name not in boards:
            status, detail = "no_category", f"board {slug!r} is not listed in boards.json"
        elif boards[name] == "\0conflict":
            status, detail = "bad_metadata", f"board {slug!r} is listed twice in boards.json with different categories"
        elif boards[name] is None:
            status, detail = "no_category", f"board {slug!r} has no category in boards.json"
        else:
            category = boards[name]
        labels = dict(user=user, board=slug, category=category)
        for pin_entry in walker.children(board_entry.path):
            pin_name = pin_entry.name
            pin_kind, _ = walker.kind(pin_entry)
            if pin_kind == "dir":
                _scan_pin(walker, pin_entry.path, _join(board_rel, pin_name), display(pin_name), labels, status, detail)
            elif pin_kind == "other" or pin_name.lower().endswith(_SIDECAR_SUFFIXES):
                listing.ignored_files += 1
            else:  # an image directly in the board folder: a pin without its own folder
                stem = pin_name.rsplit(b".", 1)[0] if b"." in pin_name[1:] else pin_name
                row = walker.file_entry(pin_entry, _join(board_rel, pin_name), pin=display(stem), **labels)
                if row is not None:
                    _apply_status(row, status, detail)
                    listing.entries.append(row)
    if boards_error and len(listing.entries) == rows_before and os.path.lexists(boards_path):
        listing.entries.append(Entry(_join(user_rel, b"boards.json"), boards_path, user=user, status="bad_metadata",
                                     detail=boards_error, decode=False))


def _apply_status(row: Entry, status: str | None, detail: str) -> None:
    """Give a listing-level status to a row that has none of its own (its own, e.g. outside_root, wins)."""
    if status and row.status is None:
        row.status, row.detail = status, detail


def _scan_pin(walker: _Walker, pin_dir: bytes, pin_rel: bytes, pin: str, labels: dict, status: str | None, detail: str) -> None:
    listing = walker.listing
    pin_error = None
    rows: list[Entry] = []
    for child in walker.children(pin_dir):
        name = child.name
        child_rel = _join(pin_rel, name)
        if name == b"pin.json":
            key = _stat_key(child.path, child_rel)
            if key:
                listing.metadata_files.append(key)
            pin_error = _read_pin(child.path)
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
        note = "the pin folder has no image file" + (f"; {pin_error}" if pin_error else "")
        listing.entries.append(Entry(pin_rel, pin_dir, pin=pin, status="missing_image", detail=note, decode=False, **labels))
        return
    for row in rows:
        if status == "bad_metadata":
            _apply_status(row, status, detail)
        elif pin_error:
            _apply_status(row, "bad_metadata", pin_error)
        else:
            _apply_status(row, status, detail)
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


def scan_gallery_dl(source: str | os.PathLike, categories: CategoryMap | None = None) -> Listing:
    """Every image under the owners' board folders; user, board and pin from the folders, file name and metadata."""
    listing = Listing("gallery-dl", _root_of(source))
    walker = _Walker(listing)
    base = gallery_dl_base(listing.root)
    base_rel = os.path.relpath(base, listing.root) if base != listing.root else b""
    for owner_entry in walker.children(base):
        owner_kind, _ = walker.kind(owner_entry)
        if owner_kind != "dir":
            listing.ignored_files += 1
            continue
        owner_rel = _join(base_rel, owner_entry.name)
        for board_entry in walker.children(owner_entry.path):
            if walker.kind(board_entry)[0] != "dir":
                listing.ignored_files += 1
                continue
            labels = {"user": display(owner_entry.name), "board": display(board_entry.name)}
            real = os.path.realpath(board_entry.path)
            for row in walker.walk_files(board_entry.path, _join(owner_rel, board_entry.name), (listing.root, real), **labels):
                if row is None:
                    continue
                name = os.path.basename(row.rel)
                if name.lower().endswith(_GALLERY_DL_SKIPPED):
                    listing.ignored_files += not name.lower().endswith(b".json")  # metadata is read with its image
                    continue
                _label_gallery_dl_file(listing, row, name, categories)
                listing.entries.append(row)
    return listing


def _label_gallery_dl_file(listing: Listing, row: Entry, name: bytes, categories: CategoryMap | None) -> None:
    """Pin id, category (the board's own, else the map's) and metadata status of one gallery-dl file."""
    match = _GALLERY_DL_FILE.match(name)
    row.pin = display(match.group(1)) if match else display(name.rsplit(b".", 1)[0])
    metadata, error = None, None
    for candidate in (row.abspath + b".json", row.abspath.rsplit(b".", 1)[0] + b".json"):
        if os.path.isfile(candidate):
            key = _stat_key(candidate, os.path.relpath(candidate, listing.root))
            if key:
                listing.metadata_files.append(key)
            metadata, error = _read_json_object(candidate)
            break
    if error:
        _apply_status(row, "bad_metadata", error)
        return
    board = metadata.get("board") if metadata else None
    board = board if isinstance(board, dict) else {}
    owner = board.get("owner") if isinstance(board.get("owner"), dict) else {}
    if metadata and isinstance(metadata.get("id"), (str, int)) and str(metadata["id"]).isdigit():
        row.pin = str(metadata["id"])
    own = board.get("category")  # the pin's top-level "category" is gallery-dl's extractor name, never a label
    row.category = normalize_category(own) if isinstance(own, str) else None
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


def read_table(path: Path):
    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        else:
            frame = pd.read_parquet(path)
    except Exception as error:  # pandas/pyarrow raise many types for malformed files
        raise PintopicError(f"cannot read the table {path}: {error}") from None
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
        category = normalize_category(_cell(frame["category"].iat[index]))
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
        if row.status is None and category is None:
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
