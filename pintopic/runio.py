"""Run-folder plumbing shared by every stage: atomic writes, settings hashes, the run lock, the run marker.

Every output file is written to a temporary name in the same folder (``.pintopic-NAME.XXXX.tmp``) and
renamed into place, so a killed process never leaves a half-written file under its final name. A run
folder carries a marker file (:data:`RUN_MARKER`) from its creation on; the run lock refuses any other
non-empty folder, and leftover temporaries are deleted only inside a marked folder and only when their
names are pintopic's own, so no other program's file is ever touched.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pintopic.errors import PintopicError, RunLockedError
from pintopic.safeio import disk_full, is_disk_full, read_json_file, read_regular

_UMASK = os.umask(0)
os.umask(_UMASK)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def canonical_json(obj: Any) -> str:
    """Stable JSON text (sorted keys), so equal settings give equal bytes and equal hashes."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, default=_json_default) + "\n"


def settings_hash(settings: Any, length: int = 10) -> str:
    """Short hex digest of settings; part of folder keys and stage-completion checks."""
    return hashlib.sha256(canonical_json(settings).encode()).hexdigest()[:length]


#: Prefix of every temporary file pintopic writes; :func:`remove_stale_temporaries` deletes nothing else.
TEMP_PREFIX = ".pintopic-"
TEMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A full disk becomes one :class:`~pintopic.safeio.DiskFullError` (``size``: the bytes being written, if known)
    and the partial temporary file is removed.
    """
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs are meant to be shared
        os.replace(tmp_path, path)
    except OSError as error:
        if is_disk_full(error):
            raise disk_full(path.parent, size) from None
        raise
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


#: How deep below a run folder :func:`remove_stale_temporaries` looks (its deepest outputs are 4 levels down).
TEMPORARIES_DEPTH = 6


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete the temporary files of writers killed mid-write (``.pintopic-NAME.XXXX.tmp``); returns how many.

    Called by the run lock's holder: every writer into a run folder holds its lock, so any such file found
    then belongs to a dead process. Only inside a marked run folder, never following symlinks, and only
    files with pintopic's own prefix: another program's temporaries are never touched.
    """
    if not is_run_folder(folder):
        return 0
    removed = 0
    stack = [(os.fspath(folder), 0)]
    while stack:
        directory, depth = stack.pop()
        try:
            with os.scandir(directory) as entries:
                children = list(entries)
        except OSError:
            continue
        for entry in children:
            if entry.is_dir(follow_symlinks=False):
                if depth < TEMPORARIES_DEPTH:
                    stack.append((entry.path, depth + 1))
            elif entry.name.startswith(TEMP_PREFIX) and entry.name.endswith(TEMP_SUFFIX) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


#: The file that makes a folder a pintopic run folder (written when a stage first claims the folder).
RUN_MARKER = ".pintopic-run"
#: Everything pintopic writes at the top of a run folder: a folder holding only these is a run from before markers.
RUN_NAMES = frozenset({RUN_MARKER, ".lock", "dataset", "features", "results", "finetune", "report.html", "run.json",
                       "run.log", "config.resolved.toml"})


def is_run_folder(folder: str | os.PathLike) -> bool:
    """True when ``folder`` carries the run marker."""
    folder = os.fspath(folder)
    return os.path.isfile(os.path.join(folder, os.fsencode(RUN_MARKER) if isinstance(folder, bytes) else RUN_MARKER))


def claim_run_folder(folder: str | os.PathLike) -> Path:
    """Check that ``folder`` can be a run folder (creating it): new, empty, marked, or holding only pintopic's names.

    A folder that holds only names pintopic writes (:data:`RUN_NAMES`) is a run made before markers
    existed. Raises :class:`PintopicError` for a file, or a non-empty folder that is not a run. The marker
    itself is written by :func:`mark_run_folder`, under the run lock (the lock's holder deletes temporaries).
    """
    folder = Path(folder)
    if is_run_folder(folder):
        return folder
    if folder.exists() and not folder.is_dir():
        raise PintopicError(f"run folder {folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    foreign = sorted(name for name in os.listdir(folder) if name not in RUN_NAMES
                     and not (name.startswith(".") and name.endswith(TEMP_SUFFIX)))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise PintopicError(f"{folder} is not a pintopic run folder (it holds {shown} and has no {RUN_MARKER} marker); "
                            "give a new or empty folder for a run")
    return folder


def mark_run_folder(folder: str | os.PathLike) -> None:
    """Write the run marker where it is missing; call it holding the run lock."""
    if not is_run_folder(folder):
        write_bytes(Path(folder) / RUN_MARKER, b"pintopic run folder: every file here is written by pintopic\n")


def csv_text(rows) -> str:
    """Rows as CSV text, every field quoted where it must be (commas, quotes, newlines in category names):
    the one CSV writer of every table pintopic writes; read them back with :func:`pintopic.safeio.read_csv_text`."""
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path, len(data)) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, canonical_json(obj))


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's value; a pipe, an oversized file or a parser failure is one :class:`~pintopic.safeio.UnreadableFileError`
    (a :class:`PintopicError`, and a ``ValueError`` for callers that treat a damaged file as absent)."""
    return read_json_file(path)


def write_parquet(path: str | os.PathLike, table) -> None:
    """Write a pyarrow Table (or pandas DataFrame) atomically, deterministically (no pandas index)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    table = table.replace_schema_metadata(None)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_npy(path: str | os.PathLike, array) -> None:
    import numpy as np

    array = np.asarray(array)
    with atomic_path(path, array.nbytes) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)


def write_if_changed(path: str | os.PathLike, data: bytes) -> bool:
    """Write only when the content differs, so reruns leave files (and mtimes) untouched."""
    path = Path(path)
    try:
        if os.stat(path).st_size == len(data) and read_regular(path) == data:
            return False
    except (OSError, ValueError):  # absent, or not a regular file: replaced by the new one
        pass
    write_bytes(path, data)
    return True


def stage_is_complete(marker: str | os.PathLike, settings: Any) -> bool:
    """True when ``marker`` (a JSON file written last by a stage) records exactly these settings."""
    marker = Path(marker)
    if not marker.exists():
        return False
    try:
        return read_json(marker).get("settings_hash") == settings_hash(settings)
    except (ValueError, OSError):
        return False


class RunLock:
    """An exclusive, kernel-held lock on a run folder (``flock``; released even on SIGKILL).

    A second process gets :class:`RunLockedError` at once, naming the holder's pid and command.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / ".lock"
        self._handle = None

    #: lock files this process already holds -> nesting depth (a stage called inside `pintopic run`)
    _held: dict[str, int] = {}

    @classmethod
    def held_by_parent(cls, run_dir: str | os.PathLike) -> None:
        """Declare that this process works under the lock its parent holds on ``run_dir`` (a stage that
        `pintopic run` started in a child process): the stages' own locks on it then nest instead of waiting."""
        cls._held[str((Path(run_dir) / ".lock").resolve())] = 1

    def __enter__(self) -> RunLock:
        key = str(self.path.resolve())
        if key in RunLock._held:
            RunLock._held[key] += 1
            return self
        claim_run_folder(self.path.parent)
        handle = _open_lock_file(self.path)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _lock_holder(handle.fileno()) or handle.read().strip() or "an unknown process"
            handle.close()
            raise RunLockedError(f"run folder {self.path.parent} is in use by {holder}; wait for it to finish") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} ({' '.join(_command_line())})")
        handle.flush()
        self._handle = handle
        RunLock._held[key] = 1
        _LOCK_FDS.add(handle.fileno())
        remove_stale_temporaries(self.path.parent)
        mark_run_folder(self.path.parent)
        return self

    def __exit__(self, *exc) -> None:
        key = str(self.path.resolve())
        if self._handle is None and RunLock._held.get(key, 0) > 1:
            RunLock._held[key] -= 1
            return
        RunLock._held.pop(key, None)
        if self._handle is not None:
            _LOCK_FDS.discard(self._handle.fileno())
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def _open_lock_file(path: Path):
    """The lock file, opened for reading and writing without blocking; anything but a regular file is refused."""
    from pintopic.safeio import check_regular

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o666 & ~_UMASK)
    try:
        check_regular(os.fstat(fd), path, what="run lock")
    except PintopicError:
        os.close(fd)
        raise PintopicError(f"{path} is not a regular file; remove it so the run folder can be locked") from None
    return os.fdopen(fd, "a+")


def _command_line(pid: str = "self") -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1][:6]
    except OSError:
        return ["python"]


def _lock_holder(fd: int) -> str | None:
    """"pid N (command)" of the process holding the flock on ``fd``'s file, from the kernel's /proc/locks.

    The lock file's text can lag (the holder writes it just after locking), so the kernel is asked first.
    """
    info = os.fstat(fd)
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if "->" not in fields and len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == device and fields[4].isdigit():
            pid = fields[4]
            return f"pid {pid} ({' '.join(_command_line(pid))})" if Path(f"/proc/{pid}").exists() else None
    return None


#: Descriptors of the run locks this process holds.
_LOCK_FDS: set[int] = set()


def _drop_inherited_locks() -> None:
    """In a forked child (a DataLoader worker), let go of the parent's lock descriptors without unlocking.

    flock belongs to the open file, shared by every forked copy of the descriptor: an orphaned worker of
    a SIGKILLed run would otherwise keep the run folder locked. /dev/null is put in place of each
    descriptor (rather than closing it) so the child's file objects never close a reused number.
    """
    if not _LOCK_FDS:
        return
    null = os.open(os.devnull, os.O_RDONLY)
    for fd in _LOCK_FDS:
        try:
            os.dup2(null, fd)
        except OSError:
            pass
    os.close(null)
    _LOCK_FDS.clear()
    RunLock._held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_inherited_locks)


def run_paths(run_dir: str | os.PathLike) -> dict[str, Path]:
    """The run-folder contract: where each stage writes."""
    run = Path(run_dir)
    return {
        "run": run,
        "dataset": run / "dataset",
        "features": run / "features",
        "results": run / "results",
        "report": run / "report.html",
    }
