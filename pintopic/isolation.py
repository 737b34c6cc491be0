"""Run one stage in a fresh process of its own, under the run lock its parent holds.

What a stage leaves behind in a process (imported libraries, allocator arenas, thread pools) is not given back
when the stage returns: `pintopic run` would peak at its last heavy stage plus everything the earlier ones left.
A stage in its own process hands all of it back when it ends, so the run peaks at its largest stage.

The child is a plain ``python`` (not a multiprocessing child: it exits like any program, so libraries with worker
pools, such as joblib's loky, shut down as they expect). It does not take the run lock
again (see :meth:`RunLock.held_by_parent`) and is killed with its parent (``PR_SET_PDEATHSIG``), so no stage
outlives a killed run while the folder looks free.
"""
from __future__ import annotations

import ctypes
import os
import pickle
import signal
import struct
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pintopic.errors import PintopicError
from pintopic.runio import RunLock

#: The answer's length, sent before it.
_LENGTH = struct.Struct("<Q")
#: prctl option: the signal this process gets when the thread that created it exits (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


def can_isolate() -> bool:
    """Whether stages can run in child processes here: the parent-death signal is Linux's."""
    return sys.platform.startswith("linux")


def call_in_child(run: str | os.PathLike, function: Callable, *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)`` in a fresh Python process working under this process's lock on ``run``.

    ``function`` and its arguments are pickled (a module-level function). Returns its value or raises its
    exception. A child that dies without answering (killed, out of memory) raises :class:`PintopicError` with
    its exit status; Ctrl-C or any error here kills the child first.
    """
    name = getattr(function, "__name__", "stage").strip("_")
    request = pickle.dumps((os.getpid(), str(run), function, args, kwargs))
    request_read, request_write = os.pipe()
    answer_read, answer_write = os.pipe()
    try:
        child = subprocess.Popen([sys.executable, "-c", _CHILD_CODE, str(request_read), str(answer_write), _package_root(), name],
                                 pass_fds=(request_read, answer_write), stdin=subprocess.DEVNULL)
    except BaseException:
        os.close(request_write)
        os.close(answer_read)
        raise
    finally:
        os.close(request_read)
        os.close(answer_write)
    try:
        answer = _exchange(request, request_write, answer_read)
        child.wait()
    except BaseException:
        child.kill()
        child.wait()
        raise
    if not answer:
        raise PintopicError(f"the {name} stage's process ended without an answer ({_exit_status(child.returncode)}); "
                            "rerun to resume, finished work is kept")
    kind, value = pickle.loads(answer)
    if kind == "error":
        raise value
    return value


def _exchange(request: bytes, request_fd: int, answer_fd: int) -> bytes:
    """Send the request, then read the answer to its end (empty when the child died first)."""
    try:
        unsent = memoryview(request)
        while unsent:
            unsent = unsent[os.write(request_fd, unsent):]
    except BrokenPipeError:
        pass  # the child is gone; its exit status says why
    finally:
        os.close(request_fd)
    with os.fdopen(answer_fd, "rb") as source:  # length-prefixed: a forked grandchild holding the pipe open
        header = source.read(_LENGTH.size)      # cannot keep this waiting for an end of file
        if len(header) < _LENGTH.size:
            return b""
        length = _LENGTH.unpack(header)[0]
        answer = source.read(length)
        return answer if len(answer) == length else b""  # cut short: the child died while answering


#: The child's program: this pintopic importable (its folder put on the path only when missing), then child_main.
#: Its last argument, the stage's name, is for ``ps``.
_CHILD_CODE = ("import sys\n"
               "if sys.argv[3] not in sys.path:\n"
               "    sys.path.insert(0, sys.argv[3])\n"
               "from pintopic.isolation import child_main\n"
               "raise SystemExit(child_main(int(sys.argv[1]), int(sys.argv[2])))\n")


def _package_root() -> str:
    """The folder this pintopic package is in, so the child runs the same code, installed or not."""
    return str(Path(__file__).resolve().parents[1])


def _exit_status(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}" + (", likely out of memory" if code == -signal.SIGKILL else "")
    return f"exit status {code}"


def child_main(request_fd: int, answer_fd: int) -> int:
    """The child process's entry point: read the request, die with the parent, run the function, write the answer."""
    with os.fdopen(request_fd, "rb") as source:
        parent_pid, run, function, args, kwargs = pickle.loads(source.read())
    die_with_parent(parent_pid)
    RunLock.held_by_parent(run)
    try:
        answer = pickle.dumps(("value", function(*args, **kwargs)))
    except BaseException as error:  # noqa: BLE001 - every failure goes back to the parent, which raises it
        if not isinstance(error, (PintopicError, KeyboardInterrupt)):
            traceback.print_exc()  # the traceback does not cross the pipe; show where it happened
        answer = _error_answer(error)
    with os.fdopen(answer_fd, "wb") as sink:
        sink.write(_LENGTH.pack(len(answer)) + answer)
    return 0


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux); exit at once if it already has.

    For any child that must not outlive its parent: a stage's process, an engine's worker (which would otherwise
    wait for work for ever and keep its memory)."""
    if can_isolate():
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def _error_answer(error: BaseException) -> bytes:
    """The pickled answer for ``error``: the error itself when it survives pickling, else an error of the nearest
    kind the parent handles alike."""
    try:
        answer = pickle.dumps(("error", error))
        pickle.loads(answer)
        return answer
    except Exception:  # noqa: BLE001 - any pickling failure means: send a plain copy
        pass
    if isinstance(error, PintopicError):
        return pickle.dumps(("error", PintopicError(str(error))))
    return pickle.dumps(("error", RuntimeError(f"{type(error).__name__}: {error}")))
