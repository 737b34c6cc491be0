"""Reading files without trusting them, and writing without filling the disk: one implementation for every stage.

Anything pintopic reads may have been swapped for something hostile: a named pipe (``open`` would block
forever), a device (``/dev/zero`` never ends), a symlink loop, a 10 GB "JSON" file, 10 KB of nested
``[`` (the parser's recursion blows up). Every read of a file goes through :func:`open_regular` (regular
files only, checked without blocking, optionally size-capped) and every JSON/TOML parse through
:func:`parse_json`/:func:`parse_toml`, so each of those ends as one :class:`UnreadableFileError` with a
plain reason, which a stage turns into a file's status or the CLI prints as one line.

Writers call :func:`ensure_free_space` before large writes and turn ``ENOSPC`` into :class:`DiskFullError`
(``no space left on DEVICE: need N, have M``) with :func:`disk_full`.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
from typing import Any, BinaryIO

from pintopic.errors import PintopicError

#: Default cap for JSON files pintopic wrote itself (meta.json, results.json, model.json ...).
MAX_JSON_BYTES = 256 * 1024**2
#: Default cap for metadata files of a collection (``boards.json``, ``pin.json``); ``ingest --max-metadata-bytes``.
MAX_METADATA_BYTES = 8 * 1024**2
#: Cap for a study config (TOML).
MAX_CONFIG_BYTES = 4 * 1024**2

#: What each kind of failure is called; callers map kinds to statuses (``imageio.status_of``).
KINDS = ("missing", "loop", "not_regular", "too_large", "unreadable", "unparseable")


class UnreadableFileError(PintopicError, ValueError):
    """A file that was not read or not understood; ``kind`` is one of :data:`KINDS`, ``reason`` says why in words.

    Also a ``ValueError``, so code that treats a damaged file as absent (``except (OSError, ValueError)``) does so.
    """

    def __init__(self, path: str | bytes | os.PathLike, kind: str, reason: str):
        self.path = _shown(path)
        self.kind = kind
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # pickled with its fields, so it crosses a process boundary (a stage's child process)
        return type(self), (self.path, self.kind, self.reason)


class DiskFullError(PintopicError):
    """A write failed (or would fail) for lack of space; the message names the device and both sizes."""


def _shown(path: str | bytes | os.PathLike) -> str:
    value = os.fspath(path)
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


_SPECIAL = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words (``a named pipe (FIFO)``, ``a directory`` ...)."""
    return next((name for test, name in _SPECIAL if test(mode)), "not a regular file")


def _refuse(path, error: OSError) -> UnreadableFileError:
    if error.errno == errno.ENOENT:
        return UnreadableFileError(path, "missing", "file not found")
    if error.errno == errno.ELOOP:
        return UnreadableFileError(path, "loop", "symlink loop (the link leads back to itself)")
    if error.errno in (errno.ENXIO, errno.EOPNOTSUPP):  # opening a socket file
        return UnreadableFileError(path, "not_regular", "not a regular file: a socket")
    return UnreadableFileError(path, "unreadable", f"cannot be read: {error.strerror or error}")


def check_regular(info: os.stat_result, path, max_bytes: int | None = None, what: str = "file") -> None:
    """Raise :class:`UnreadableFileError` unless ``info`` describes a regular file of at most ``max_bytes``."""
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableFileError(path, "not_regular", f"not a regular file: {file_kind(info.st_mode)}")
    if max_bytes is not None and info.st_size > max_bytes:
        raise UnreadableFileError(path, "too_large", f"{what} is {info.st_size:,} bytes, over the limit of {max_bytes:,}")


def open_regular(path: str | bytes | os.PathLike, *, max_bytes: int | None = None, what: str = "file") -> BinaryIO:
    """Open ``path`` for binary reading only if it is a regular file (of at most ``max_bytes``); never blocks.

    ``stat`` first, so a device or pipe is never even opened; then ``O_NONBLOCK`` and ``fstat`` on the
    descriptor, so a file swapped for a pipe in between cannot block either. Raises :class:`UnreadableFileError`.
    """
    return _open_sized(path, max_bytes, what)[0]


def _open_sized(path, max_bytes: int | None, what: str) -> tuple[BinaryIO, int]:
    """:func:`open_regular`'s file and the size its descriptor's ``fstat`` gave."""
    try:
        check_regular(os.stat(path), path, max_bytes, what)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as error:
        raise _refuse(path, error) from None
    try:
        status = os.fstat(fd)
        check_regular(status, path, max_bytes, what)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb"), status.st_size


def require_regular(path: str | bytes | os.PathLike, what: str = "file") -> None:
    """Raise :class:`UnreadableFileError` unless ``path`` is a regular file, for readers that must open the path
    themselves (memory maps, Parquet readers); checked by ``stat``, so a pipe is never opened."""
    try:
        check_regular(os.stat(path), path, None, what)
    except OSError as error:
        raise _refuse(path, error) from None


def read_regular(path: str | bytes | os.PathLike) -> bytes:
    """All bytes of a regular file (no size cap: for pintopic's own outputs, e.g. to compare or hash them)."""
    with open_regular(path) as handle:
        return handle.read()


def open_append(path: str | bytes | os.PathLike):
    """Open a log file for appending text, never blocking (a pipe planted in its place is refused)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as error:
        raise _refuse(path, error) from None
    try:
        check_regular(os.fstat(fd), path)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "a", encoding="utf-8")


def read_capped(path: str | bytes | os.PathLike, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (also when it grows while being read)."""
    handle, size = _open_sized(path, max_bytes, what)
    with handle:
        try:
            # a buffer the file's size, not the cap's (a read of n bytes reserves n): a small file under a large
            # cap reserves little; one more read catches a file that grew since its size was taken
            expected = min(size, max_bytes) + 1
            data = handle.read(expected)
            if len(data) == expected and expected <= max_bytes:
                data += handle.read(max_bytes + 1 - expected)
        except OSError as error:
            raise _refuse(path, error) from None
    if len(data) > max_bytes:
        raise UnreadableFileError(path, "too_large", f"{what} is over the limit of {max_bytes:,} bytes")
    return data


def read_text_file(path: str | os.PathLike, max_bytes: int, what: str) -> str:
    """A small user-given text file (a config, a key or token list, a category map) as text, or one
    :class:`PintopicError` naming ``what``: "WHAT PATH not found", "... cannot be read (reason)", "... is not UTF-8"."""
    try:
        return read_capped(path, max_bytes, what).decode("utf-8-sig")
    except UnreadableFileError as error:
        if error.kind == "missing":
            raise PintopicError(f"{what} {_shown(path)} not found") from None
        raise PintopicError(f"{what} {_shown(path)} cannot be read ({error.reason})") from None
    except UnicodeDecodeError as error:
        raise PintopicError(f"{what} {_shown(path)} is not UTF-8 text ({error})") from None


def parse_json(data: bytes | str, path: str | bytes | os.PathLike = "", what: str = "JSON") -> Any:
    """``json.loads`` that turns every parser failure (bad syntax, bad UTF-8, nesting too deep) into one error."""
    import json

    try:
        return json.loads(data.decode("utf-8-sig") if isinstance(data, bytes) else data)
    except RecursionError:
        raise UnreadableFileError(path, "unparseable", f"{what} is nested too deeply to parse") from None
    except MemoryError:
        raise UnreadableFileError(path, "unparseable", f"{what} is too large to parse in memory") from None
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UnreadableFileError(path, "unparseable", f"{what} is not valid JSON ({one_line(error)})") from None


def read_json_file(path: str | bytes | os.PathLike, *, max_bytes: int = MAX_JSON_BYTES, what: str = "JSON file") -> Any:
    """A JSON file's value, read by :func:`read_capped` and parsed by :func:`parse_json`."""
    return parse_json(read_capped(path, max_bytes, what), path, what)


def parse_toml(text: str, path: str | os.PathLike = "", what: str = "TOML") -> dict:
    """``tomllib.loads`` with every parser failure (syntax, nesting too deep) as one :class:`UnreadableFileError`."""
    import tomllib

    try:
        return tomllib.loads(text)
    except RecursionError:
        raise UnreadableFileError(path, "unparseable", f"{what} is nested too deeply to parse") from None
    except (tomllib.TOMLDecodeError, ValueError) as error:
        raise UnreadableFileError(path, "unparseable", f"{what} is not valid TOML: {one_line(error)}") from None


def one_line(error: BaseException) -> str:
    """An exception's message on one line (libraries put newlines in theirs), or its type when it has none."""
    return " ".join(str(error).split()) or type(error).__name__


def read_csv_text(path: str | os.PathLike, *, index_col: int | None = None):
    """A CSV file as a DataFrame of text cells: nothing becomes a number or NaN (``NA``, ``null``, ``nan``,
    ``123`` stay names), quoted fields keep their commas; only a regular file is opened. Any parser failure
    is one :class:`UnreadableFileError`."""
    import pandas as pd

    with open_regular(path) as handle:
        try:
            return pd.read_csv(handle, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8",
                               index_col=index_col)
        except (ValueError, RecursionError, MemoryError, pd.errors.ParserError) as error:  # UnicodeDecodeError too
            raise UnreadableFileError(path, "unparseable", f"not a readable CSV table ({one_line(error)[:200]})") from None


def read_parquet_table(path: str | os.PathLike):
    """A Parquet file as a DataFrame; only a regular file is opened. Any reader failure (pyarrow raises many
    types for a damaged file) is one :class:`UnreadableFileError`."""
    import pyarrow.parquet as pq

    with open_regular(path) as handle:
        try:
            # Read on this thread only: an Arrow worker left holding the Python file calls into Python at
            # interpreter exit and aborts the process ("terminate called without an active exception", apache/arrow#34314).
            return pq.read_table(handle, use_threads=False, pre_buffer=False).to_pandas(use_threads=False)
        except Exception as error:  # noqa: BLE001 - pyarrow raises several types for damaged files
            raise UnreadableFileError(path, "unparseable", f"not a readable Parquet table ({one_line(error)[:200]})") from None


# -- free space -----------------------------------------------------------------------------------------

def free_bytes(folder: str | os.PathLike) -> int:
    """Bytes an unprivileged writer may still use on ``folder``'s file system."""
    info = os.statvfs(folder)
    return info.f_bavail * info.f_frsize


def device_of(folder: str | os.PathLike) -> str:
    """``"/dev/vda (mounted at /)"``: the file system holding ``folder``, as /proc/mounts names it."""
    path = os.path.realpath(folder)
    while not os.path.ismount(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as handle:
            sources = {fields[1]: fields[0] for fields in (line.split() for line in handle) if len(fields) > 1}
    except OSError:
        sources = {}
    source = sources.get(path.replace(" ", "\\040"))
    return f"{source} (mounted at {path})" if source else path


def human_bytes(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:,} bytes" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1024
    return f"{count:,.1f} TiB"  # pragma: no cover


def disk_full(folder: str | os.PathLike, need: int | None = None) -> DiskFullError:
    """The one-line error for a full disk under ``folder`` (``need``: bytes the write wanted, when known)."""
    while not os.path.isdir(folder) and os.path.dirname(os.fspath(folder)) != os.fspath(folder):
        folder = os.path.dirname(os.fspath(folder))
    try:
        have = human_bytes(free_bytes(folder))
    except OSError:
        have = "unknown"
    wanted = human_bytes(need) if need is not None else "more"
    return DiskFullError(f"no space left on {device_of(folder)}: need {wanted}, have {have} (writing in {_shown(folder)})")


def is_disk_full(error: BaseException) -> bool:
    """True for the errors a full disk or an exhausted quota gives (ENOSPC, EDQUOT; pyarrow's carry only the text)."""
    return isinstance(error, OSError) and (error.errno in (errno.ENOSPC, errno.EDQUOT)
                                           or "No space left on device" in str(error))


def ensure_free_space(folder: str | os.PathLike, need: int) -> None:
    """Raise :class:`DiskFullError` now, before writing, when ``folder``'s file system has less than ``need`` bytes free."""
    try:
        have = free_bytes(folder)
    except OSError:
        return  # cannot tell: the write itself will say
    if need > have:
        raise disk_full(folder, need)
