"""The collector's folder: the crawl layout ingest reads, the resume state, the summary and the per-pin log.

```
OUT/<user>/boards.json                       the user's boards (slug = board id), categories from the map
OUT/<user>/<board id>/<pin id>/pin.json      the pin as the API gave it, plus image_url/image_files/section
OUT/<user>/<board id>/<pin id>/<pin id>.jpg  the image (<pin id>_<n>.<ext> for every image of a multi-image pin)
OUT/collect.json                             the summary: users, boards, every pin not fetched and why
OUT/collect-pins.jsonl                       one line per pin saved, skipped or failed, appended by every run
OUT/.collect/                                resume state: the pass, and per board its bookmark and results
```

Folder and file names come from ids only. Every file is written atomically (temporary file + rename), a
pin's images before its ``pin.json``, so a pin folder with ``pin.json`` is complete; the board state is
written after each page, so a killed collection resumes at the first page not fully done.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from pintopic.errors import PintopicError
from pintopic.runio import (
    canonical_json,
    read_json,
    write_bytes,
    write_if_changed,
    write_json,
)

SUMMARY = "collect.json"
PIN_LOG = "collect-pins.jsonl"
STATE_FOLDER = ".collect"
#: Board statuses that end a board for the current pass (a resumed run skips such boards).
FINISHED = ("done", "capped", "gone")


def check_out_folder(out: Path) -> None:
    """OUT must be new, empty, or an earlier collection (which is then resumed or updated)."""
    if out.exists() and not out.is_dir():
        raise PintopicError(f"{out} is a file; give a folder for the collection")
    if out.is_dir() and any(out.iterdir()) and not (out / STATE_FOLDER).is_dir():
        raise PintopicError(f"{out} is not empty and holds no earlier collection; give an empty or new folder")


def new_board_state(board_id: str, pass_no: int) -> dict:
    return {
        "pass": pass_no, "board_id": board_id, "status": "pending", "reason": None, "sections": None,
        "cursor": {"phase": "pins", "bookmark": None}, "section_queue": None, "sections_seen": [],
        "listed": 0, "counts": {}, "not_fetched": {}, "notes": [],
    }


class CrawlStore:
    """Reads and writes OUT: pins, boards.json, resume state, summary and the pin log."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.state_dir = self.out / STATE_FOLDER
        self._log = None

    # -- the crawl layout -------------------------------------------------------------------------

    def board_dir(self, user: str, board_id: str) -> Path:
        return self.out / user / board_id

    def has_pin(self, user: str, board_id: str, pin_id: str) -> bool:
        return (self.board_dir(user, board_id) / pin_id / "pin.json").is_file()

    def write_pin(self, user: str, board_id: str, pin_id: str, files: list[tuple[str, bytes]], metadata: dict) -> None:
        """The images first, ``pin.json`` last: a pin folder with ``pin.json`` is complete."""
        folder = self.board_dir(user, board_id) / pin_id
        for name, data in files:
            write_bytes(folder / name, data)
        write_json(folder / "pin.json", metadata)

    def pins_on_disk(self, user: str, board_id: str) -> int:
        try:
            with os.scandir(self.board_dir(user, board_id)) as entries:
                return sum(1 for entry in entries if os.path.isfile(os.path.join(entry.path, "pin.json")))
        except OSError:
            return 0

    def read_boards(self, user: str) -> list[dict]:
        """The user's boards.json as written before (empty when absent or unreadable)."""
        try:
            data = read_json(self.out / user / "boards.json")
        except (OSError, ValueError):
            return []
        return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []

    def write_boards(self, user: str, boards: list[dict]) -> None:
        write_if_changed(self.out / user / "boards.json", canonical_json(boards).encode("utf-8"))

    # -- resume state -----------------------------------------------------------------------------

    def start_pass(self) -> dict:
        """Resume the current pass when the last run did not finish it, else start the next one."""
        session = self._read(self.state_dir / "session.json") or {"pass": 0, "finished": True}
        if session.get("finished", True):
            session = {"pass": int(session.get("pass", 0)) + 1, "finished": False}
            write_json(self.state_dir / "session.json", session)
        return session

    def finish_pass(self, session: dict) -> None:
        write_json(self.state_dir / "session.json", {**session, "finished": True})

    def board_state(self, user: str, board_id: str, pass_no: int) -> dict:
        """The board's state in this pass (a fresh one when it has none, or one from an earlier pass)."""
        state = self._read(self._board_state_path(user, board_id))
        if not state or state.get("pass") != pass_no:
            return new_board_state(board_id, pass_no)
        return state

    def save_board_state(self, user: str, state: dict) -> None:
        write_json(self._board_state_path(user, state["board_id"]), state)

    def _board_state_path(self, user: str, board_id: str) -> Path:
        return self.state_dir / user / f"{board_id}.json"

    @staticmethod
    def _read(path: Path) -> dict | None:
        try:
            data = read_json(path)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # -- summary and log --------------------------------------------------------------------------

    def write_summary(self, summary: dict) -> None:
        write_json(self.out / SUMMARY, summary)

    def log_pin(self, line: dict) -> None:
        """Append one JSON line for a pin saved, skipped or failed, at once (a kill can at worst cut it short)."""
        if self._log is None:
            self._log = open(self.out / PIN_LOG, "a", encoding="utf-8")  # noqa: SIM115 (open for the run; close())
        self._log.write(json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n")
        self._log.flush()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
