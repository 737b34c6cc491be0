"""``pintopic collect``: the study's phase 1 over Pinterest's API v5, one consenting user's token at a time.

For each token: the account, its boards (written to ``<user>/boards.json`` with categories from the map),
then each board's sections and pins, page by page (250 per page). The images of a page download
concurrently (``concurrency`` at a time over reused connections), each checked by content, and each pin
is written before the board's bookmark moves on, so a killed run resumes at its first unfinished page.
Pins already on disk are never fetched again; a run after a finished one lists every board anew and
fetches only new pins. Every pin not fetched is kept with its reason (``collect.json``, the pin log).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import re
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pintopic import __version__
from pintopic.categories import CategoryMap, read_category_map
from pintopic.collect.api import (
    DEFAULT_API_BASE,
    DEFAULT_IMAGE_HOSTS,
    IMAGE_SIZES,
    PAGE_SIZE,
    PinterestApi,
    board_pins_path,
    boards_path,
    pin_images,
    section_pins_path,
    sections_path,
    valid_id,
)
from pintopic.collect.client import (
    ApiClient,
    AuthError,
    FetchError,
    NotFoundError,
    RetryPolicy,
)
from pintopic.collect.downloader import MAX_IMAGE_BYTES, ImageDownloader, check_image
from pintopic.collect.store import FINISHED, CrawlStore, check_out_folder
from pintopic.collect.tokens import Token, read_tokens
from pintopic.errors import PintopicError
from pintopic.runio import RunLock

#: Pinterest usernames are letters, digits and underscores: safe as a folder name, never hidden, never
#: one of OUT's own files. Anything else falls back to ``user-<account id>``.
_USERNAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


@dataclass(frozen=True)
class Settings:
    """What a collection does, recorded in collect.json (never the tokens)."""

    image_size: str = "1200x"
    multi_image: str = "first"
    max_pins_per_board: int | None = None
    since: str | None = None
    rate: float = 5.0
    concurrency: int = 8
    api_base: str = DEFAULT_API_BASE
    allow_hosts: tuple[str, ...] = DEFAULT_IMAGE_HOSTS
    max_image_bytes: int = MAX_IMAGE_BYTES
    timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def check(self) -> None:
        import httpx

        if self.image_size not in IMAGE_SIZES:
            raise PintopicError(f"--image-size must be one of {', '.join(IMAGE_SIZES)} (v5 gives no originals)")
        if self.multi_image not in ("first", "all"):
            raise PintopicError("--multi-image must be 'first' or 'all'")
        if self.max_pins_per_board is not None and self.max_pins_per_board < 1:
            raise PintopicError("--max-pins-per-board must be at least 1")
        if not self.rate > 0 or not 1 <= self.concurrency <= 64:
            raise PintopicError("--rate must be above 0 and --concurrency between 1 and 64")
        if not self.allow_hosts:
            raise PintopicError("give at least one --allow-host")
        url = httpx.URL(self.api_base)
        if url.scheme != "https" and not (url.scheme == "http" and url.host in ("127.0.0.1", "localhost", "::1")):
            raise PintopicError(f"--api-base must be an https URL (plain http only on loopback): {self.api_base}")
        since_datetime(self.since)

    def record(self) -> dict:
        return {**asdict(self), "allow_hosts": list(self.allow_hosts)}


def since_datetime(value: str | None) -> dt.datetime | None:
    """``--since`` as a naive UTC datetime (a date means its midnight)."""
    if value is None:
        return None
    parsed = _parse_time(value)
    if parsed is None:
        raise PintopicError(f"--since must be a date like 2024-01-31 (or an ISO date-time), not {value!r}")
    return parsed


def _parse_time(value) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(dt.timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed


def collect(out, tokens, *, categories=None, progress: bool = True, **options) -> dict:
    """Collect every consenting user's boards and pins into ``out`` (the crawl layout); return collect.json.

    ``tokens`` is the tokens file; ``categories`` a board -> category CSV; ``options`` are :class:`Settings`.
    """
    settings = Settings(**{key: tuple(value) if key == "allow_hosts" else value for key, value in options.items()})
    settings.check()
    token_list = read_tokens(tokens)
    category_map = read_category_map(categories) if categories else None
    out = Path(out)
    check_out_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        store = CrawlStore(out)
        session = store.start_pass()
        started = time.perf_counter()
        run = _Run(store, settings, category_map, session["pass"], progress)
        try:
            users = asyncio.run(run.users(token_list))
        except OSError as error:  # a full or read-only disk stops the collection; rerunning resumes it
            raise PintopicError(f"cannot write the collection to {out}: {error.strerror or error}") from None
        finally:
            store.close()
        summary = run.summary(users, time.perf_counter() - started, tokens_file=str(tokens),
                              categories=str(categories) if categories else None)
        store.write_summary(summary)
        store.finish_pass(session)
    return summary


class _Run:
    """One invocation: the shared rate limit, image client and request counts; users one after another."""

    def __init__(self, store: CrawlStore, settings: Settings, category_map: CategoryMap | None, pass_no: int, progress: bool):
        self.store = store
        self.settings = settings
        self.category_map = category_map
        self.pass_no = pass_no
        self.progress = progress
        self.since = since_datetime(settings.since)
        self.counts: Counter = Counter()
        self.outcomes: Counter = Counter()

    def say(self, text: str, error: bool = False) -> None:
        if self.progress or error:
            print(f"collect: {text}", file=sys.stderr if error else sys.stdout, flush=True)

    async def users(self, tokens: list[Token]) -> list[dict]:
        from concurrent.futures import ThreadPoolExecutor

        from aiolimiter import AsyncLimiter

        concurrency = self.settings.concurrency
        self.limiter = AsyncLimiter(self.settings.rate, 1.0)
        self.slots = asyncio.Semaphore(concurrency)  # downloads at once
        self.in_memory = asyncio.Semaphore(4 * concurrency)  # pins whose images are held (downloaded, not yet written)
        self.disk = ThreadPoolExecutor(concurrency, thread_name_prefix="pintopic-collect")  # checks and fsynced writes
        self.downloader = ImageDownloader(
            self.settings.allow_hosts, connections=concurrency, policy=self.settings.retry,
            counts=self.counts, max_bytes=self.settings.max_image_bytes, timeout=self.settings.timeout)
        records, seen = [], {}
        try:
            for token in tokens:
                records.append(await self.user(token, seen))
        finally:
            await self.downloader.aclose()
            self.disk.shutdown()
        return records

    async def user(self, token: Token, seen: dict[str, int]) -> dict:
        """One user's collection; a refused token stops this user only."""
        record = {"token_line": token.line, "user": None, "status": "done", "reason": None, "boards": []}
        client = ApiClient(self.settings.api_base, token.value, limiter=self.limiter, policy=self.settings.retry,
                           counts=self.counts, timeout=self.settings.timeout)
        try:
            account = await PinterestApi(client).user_account()
            user = account.get("username") if isinstance(account.get("username"), str) else ""
            user = user if _USERNAME.match(user) else (f"user-{valid_id(account.get('id'))}" if valid_id(account.get("id")) else "")
            if not user:
                raise FetchError("GET /user_account gave neither a usable username nor an id")
            record["user"] = user
            if user in seen:
                record.update(status="skipped", reason=f"the same account as the token on line {seen[user]}")
                return record
            seen[user] = token.line
            await self.boards(PinterestApi(client), user, record)
        except AuthError as error:
            record.update(status="stopped", reason=f"{error.reason}; this user is stopped, the others go on "
                                                   f"(rerun with a fresh token to resume)")
            self.say(f"{token} ({record['user'] or 'unknown user'}): {record['reason']}", error=True)
        except FetchError as error:
            record.update(status="failed", reason=f"{error.reason}; rerun to resume")
            self.say(f"{token} ({record['user'] or 'unknown user'}): {record['reason']}", error=True)
        finally:
            await client.aclose()
        return record

    async def boards(self, api: PinterestApi, user: str, record: dict) -> None:
        listed, invalid = [], 0
        async for page in api.pages(boards_path(), "boards"):
            for item in page.items:
                if isinstance(item, dict) and valid_id(item.get("id")):
                    listed.append(item)
                else:
                    invalid += 1
        if invalid:
            record["reason"] = f"{invalid} listed board(s) without a valid id were left out"
        board_list = _Boards(self.store, user, listed, self.category_map, self.pass_no)
        board_list.write()
        boards = [_Board(self, api, user, board, board_list) for board in listed]
        record["boards"] = [board.record() for board in boards]  # what a stopped user leaves is listed too
        for index, board in enumerate(boards):
            record["boards"][index] = await board.collect()

    def summary(self, users: list[dict], seconds: float, **inputs) -> dict:
        """collect.json: settings, every user and board with its status, every pin not fetched and why."""
        not_fetched, by_status = [], Counter()
        for user in users:
            for board in user["boards"]:
                by_status[board["status"]] += 1
                not_fetched += [{"user": user["user"], "board_id": board["id"], "pin_id": pin, **why}
                                for pin, why in sorted(board.pop("not_fetched_pins").items())]
        complete = all(user["status"] in ("done", "skipped") for user in users) and by_status.keys() <= set(FINISHED)
        return {
            "tool": "pintopic", "version": __version__, "pass": self.pass_no, "complete": complete,
            "settings": self.settings.record(), "inputs": inputs,
            "counts": {"users": len(users), "users_by_status": dict(Counter(u["status"] for u in users)),
                       "boards": sum(by_status.values()), "boards_by_status": dict(by_status),
                       "pins_on_disk": sum(b["pins_on_disk"] for u in users for b in u["boards"]),
                       "not_fetched": len(not_fetched)},
            "users": users, "not_fetched": not_fetched,
            "this_run": {"pins": dict(self.outcomes), "requests": dict(sorted(self.counts.items())), "seconds": round(seconds, 3)},
        }


class _Boards:
    """A user's boards.json: the listing's boards (slug = id) with categories and sections, plus boards
    written by an earlier run that are no longer listed (kept, so their pins keep their labels)."""

    def __init__(self, store: CrawlStore, user: str, listed: list[dict], category_map: CategoryMap | None, pass_no: int):
        self.store, self.user = store, user
        self.entries = [self._entry(board, category_map) for board in listed]
        for entry in self.entries:
            state = store.board_state(user, entry["id"], pass_no)
            entry["sections"] = state["sections"] or []
        known = {entry["id"] for entry in self.entries}
        self.entries += [{**old, "listed": False} for old in store.read_boards(user) if old.get("id") not in known]

    def _entry(self, board: dict, category_map: CategoryMap | None) -> dict:
        name = board.get("name") if isinstance(board.get("name"), str) else ""
        owner = board.get("owner") if isinstance(board.get("owner"), dict) else {}
        category = category_map.lookup(board["id"], self.user, name) if category_map else None
        return {"slug": str(board["id"]), "id": str(board["id"]), "name": name, "category": category,
                "description": board.get("description"), "privacy": board.get("privacy"),
                "owner": owner.get("username"), "sections": []}

    def set_sections(self, board_id: str, sections: list[dict]) -> None:
        for entry in self.entries:
            if entry["id"] == board_id:
                entry["sections"] = sections
        self.write()

    def write(self) -> None:
        self.store.write_boards(self.user, self.entries)


class _Board:
    """One board in one pass: sections, then its pins page by page, then the pins of sections never seen."""

    def __init__(self, run: _Run, api: PinterestApi, user: str, board: dict, board_list: _Boards):
        self.run, self.api, self.user, self.board_list = run, api, user, board_list
        self.id = str(board["id"])
        self.name = board.get("name") if isinstance(board.get("name"), str) else ""
        self.state = run.store.board_state(user, self.id, run.pass_no)
        self.taken: set[str] = set()

    def save(self) -> None:
        self.run.store.save_board_state(self.user, self.state)

    async def collect(self) -> dict:
        state = self.state
        if state["status"] not in FINISHED:
            state.update(status="pending", reason=None)
            try:
                await self._sections()
                await self._pins()
                capped = self._cap_left() == 0
                state["status"] = "capped" if capped else "done"
            except NotFoundError as error:
                state.update(status="gone", reason=f"the board disappeared during the collection ({error.reason}) "
                                                   f"after {state['listed']} pins were listed")
            except AuthError:
                self.save()
                raise
            except FetchError as error:
                state.update(status="failed", reason=f"{error.reason}; rerun to resume")
            self.save()
            self._report()
        return self.record()

    async def _sections(self) -> None:
        if self.state["sections"] is not None:
            return
        sections = []
        async for page in self.api.pages(sections_path(self.id), "sections"):
            sections += [{"id": str(item["id"]), "name": item.get("name") if isinstance(item.get("name"), str) else ""}
                         for item in page.items if isinstance(item, dict) and valid_id(item.get("id"))]
        self.state["sections"] = sections
        self.save()
        self.board_list.set_sections(self.id, sections)

    async def _pins(self) -> None:
        """The board's pins, then those of every section none of them belonged to (an API that lists section
        pins apart from the board's would otherwise lose them; a section already seen costs nothing)."""
        state = self.state
        if state["cursor"]["phase"] == "pins":
            await self._listing(board_pins_path(self.id), "board_pins")
            seen = set(state["sections_seen"])
            state["section_queue"] = [] if self._cap_left() == 0 else \
                [section["id"] for section in state["sections"] if section["id"] not in seen]
            state["cursor"] = {"phase": "section_pins", "bookmark": None}
            self.save()
        while state["section_queue"] and self._cap_left() != 0:
            section = state["section_queue"][0]
            try:
                await self._listing(section_pins_path(self.id, section), "section_pins")
            except NotFoundError as error:
                state["notes"].append(f"section {section}: {error.reason}")
            state["section_queue"].pop(0)
            state["cursor"]["bookmark"] = None
            self.save()

    def _cap_left(self) -> int | None:
        cap = self.run.settings.max_pins_per_board
        return None if cap is None else max(0, cap - self.state["listed"])

    async def _listing(self, path: str, kind: str) -> None:
        """Every page from the saved bookmark on; the bookmark moves only after the page's pins are written."""
        cursor = self.state["cursor"]
        pages = self.api.pages(path, kind, cursor["bookmark"], page_size=lambda: min(PAGE_SIZE, self._cap_left() or PAGE_SIZE))
        async for page in pages:
            await self._take(page.items)
            if page.next_bookmark is None or self._cap_left() == 0:
                return
            cursor["bookmark"] = page.next_bookmark
            self.save()

    async def _take(self, items: list) -> None:
        left = self._cap_left()
        items = items[:left] if left is not None else items
        self.state["listed"] += len(items)
        await asyncio.gather(*(self._pin(item) for item in items))

    async def _pin(self, item) -> None:
        """Take one listed pin and record its outcome (in the board state, and in the pin log unless on disk)."""
        pin_id, outcome, reason, files = await self._fetch_pin(item)
        self.run.outcomes[outcome] += 1
        self.state["counts"][outcome] = self.state["counts"].get(outcome, 0) + 1
        if outcome in ("skipped", "failed"):
            self.state["not_fetched"][pin_id] = {"status": outcome, "reason": reason}
        elif outcome in ("saved", "on_disk"):
            self.state["not_fetched"].pop(pin_id, None)
        if outcome in ("saved", "skipped", "failed"):
            self.run.store.log_pin({"pass": self.run.pass_no, "user": self.user, "board_id": self.id, "pin_id": pin_id,
                                    "outcome": outcome, "reason": reason, "files": files})

    async def _fetch_pin(self, pin) -> tuple[str, str, str | None, list[str]]:
        """(pin id, saved | on_disk | repeated | skipped | failed, reason, files written) for one listed pin."""
        if not isinstance(pin, dict) or valid_id(pin.get("id")) is None:
            shown = str(pin.get("id"))[:40] if isinstance(pin, dict) else "?"
            return f"invalid:{shown}", "failed", "the listed pin has no valid id", []
        pin_id = str(pin["id"])
        section = valid_id(pin.get("board_section_id"))
        if section and section not in self.state["sections_seen"]:
            self.state["sections_seen"].append(section)
        if pin_id in self.taken:
            return pin_id, "repeated", None, []
        self.taken.add(pin_id)
        if self.run.store.has_pin(self.user, self.id, pin_id):
            return pin_id, "on_disk", None, []
        created = _parse_time(pin.get("created_at"))
        if self.run.since and created and created < self.run.since:
            return pin_id, "skipped", f"created {pin['created_at']}, before --since {self.run.settings.since}", []
        images = pin_images(pin, self.run.settings.image_size, self.run.settings.multi_image)
        if images.skip or images.fail:
            return pin_id, "skipped" if images.skip else "failed", images.skip or images.fail, []
        async with self.run.in_memory:
            try:
                async with self.run.slots:  # only the network part holds a download slot
                    blobs = [await self.run.downloader.fetch(url) for url in images.urls]
                names = await asyncio.get_running_loop().run_in_executor(
                    self.run.disk, self._check_and_write, pin, images, section, blobs)
            except FetchError as error:
                return pin_id, "failed", error.reason, []
        return pin_id, "saved", None, names

    def _check_and_write(self, pin: dict, images, section: str | None, blobs: list[bytes]) -> list[str]:
        """In a worker thread: decode-check every image (FetchError when one is not an image), then write the
        images and pin.json; returns the image file names (from the pin id and the real format only)."""
        checked = [check_image(blob) for blob in blobs]
        pin_id = str(pin["id"])
        names = [f"{pin_id}.{image.extension}" for image in checked] if len(checked) == 1 else \
            [f"{pin_id}_{number}.{image.extension}" for number, image in enumerate(checked, start=1)]
        names_by_id = {item["id"]: item["name"] for item in self.state["sections"] or []}
        metadata = {**pin, "image_url": images.urls[0], "image_urls": images.urls, "image_size": images.size,
                    "image_files": names, "images_in_pin": images.total,
                    "section": {"id": section, "name": names_by_id.get(section)} if section else None}
        self.run.store.write_pin(self.user, self.id, pin_id, [(name, image.data) for name, image in zip(names, checked)],
                                 metadata)
        return names

    def _report(self) -> None:
        counts = self.state["counts"]
        parts = ", ".join(f"{counts[key]} {key.replace('_', ' ')}" for key in ("saved", "on_disk", "repeated", "skipped", "failed")
                          if counts.get(key))
        self.run.say(f"{self.user}/{self.id} {self.name!r}: {self.state['listed']} pins listed"
                     f"{', ' + parts if parts else ''} [{self.state['status']}]" +
                     (f": {self.state['reason']}" if self.state["reason"] else ""),
                     error=self.state["status"] == "failed")

    def record(self) -> dict:
        """The board's entry in collect.json."""
        state = self.state
        reason = state["reason"] or ("not finished: the user's collection stopped" if state["status"] == "pending" else None)
        return {"id": self.id, "name": self.name, "status": state["status"], "reason": reason,
                "category": next((entry["category"] for entry in self.board_list.entries if entry["id"] == self.id), None),
                "sections": len(state["sections"] or []), "pins_listed": state["listed"],
                "pins_on_disk": self.run.store.pins_on_disk(self.user, self.id),
                "notes": state["notes"], "not_fetched_pins": dict(state["not_fetched"])}
