"""A fake Pinterest for the collector's tests and benchmark: API v5 and an image CDN, both on 127.0.0.1.

Built from Pinterest's published OpenAPI description (v5, 5.23.0): ``GET /v5/user_account``,
``/v5/boards``, ``/v5/boards/{id}/pins``, ``/v5/boards/{id}/sections`` and
``/v5/boards/{id}/sections/{sid}/pins``; bearer tokens; ``{"items": [...], "bookmark": ...}`` pages with
``page_size`` 1..250 (default 25; anything else is a 400); errors as ``{"code", "message"}``; pins with
``media`` of type ``image``, ``video`` or ``multiple_images`` and images in the four v5 sizes. The board
listing holds every pin of the board, section pins included (each with its ``board_section_id``), or
with ``section_pins_in_board=False`` only the pins outside sections (the collector must then list them
per section).

It is a real HTTP server (an ASGI app under uvicorn, in a thread) with two sockets on ephemeral ports:
the API and the CDN, so a test can see which host got what (the CDN must never see the token).
Faults are injected on demand (:meth:`FakePinterest.inject`, per-pin image faults, token expiry, boards
deleted between pages) and a request counter can SIGKILL a collector process at an exact request.
Everything is bounded: past ``max_requests`` every answer is a 503 and a violation is recorded.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qs

SIZES = ("1200x", "600x", "400x300", "150x150")
HTML_PAGE = b"<!DOCTYPE html><html><head><title>Pinterest</title></head><body>Oops! Something went wrong.</body></html>"


@dataclass
class FakePin:
    id: str
    board_id: str
    image: int | None  # index into the server's images (None: a fault pin)
    created_at: str = "2024-01-01T00:00:00"
    section_id: str | None = None
    media_type: str = "image"  # image | video | multiple_images
    extra_images: tuple[int, ...] = ()  # multiple_images: the further images
    fault: str | None = None  # foreign | html | oversized | cdn503 | cdn404
    title: str = ""


@dataclass
class FakeBoard:
    id: str
    name: str
    owner: str
    pins: list[FakePin] = field(default_factory=list)
    sections: list[tuple[str, str]] = field(default_factory=list)
    deleted: bool = False
    delete_after_pages: int | None = None  # deleted once this many pin pages were served
    pages_served: int = 0


@dataclass
class FakeUser:
    username: str
    id: str
    token: str
    boards: list[FakeBoard] = field(default_factory=list)
    expire_after: int | None = None  # the token turns invalid after this many API requests
    requests: int = 0


class FakePinterest:
    """The fake's data, fault script and counters; ``start()`` serves it, ``stop()`` ends it."""

    def __init__(self, users: list[FakeUser], images: list[bytes], *, latency: float = 0.0, page_cap: int = 250,
                 max_requests: int = 50_000, oversize: int = 3 * 1024 * 1024, section_pins_in_board: bool = True):
        self.users = users
        #: whether a board's listing holds its sections' pins too (False: only pins outside sections, as the web does)
        self.section_pins_in_board = section_pins_in_board
        self.by_token = {user.token: user for user in users}
        self.boards = {board.id: board for user in users for board in user.boards}
        self.images = images
        self.latency = latency
        self.page_cap = page_cap
        self.max_requests = max_requests
        self.oversize = oversize
        self.counts: Counter = Counter()
        self.page_sizes: Counter = Counter()
        self.image_sizes: Counter = Counter()
        self.violations: list[str] = []
        self.total = 0
        self._bookmarks: dict[str, tuple[str, int]] = {}
        self._script: dict[tuple[str, int | None], list[str]] = {}
        self._cdn_seen: Counter = Counter()
        self._kill: tuple[int, int, str | None] | None = None
        self.killed: list[str] = []
        #: (monotonic time, path, bookmark) of every API request, to check the waits between them
        self.api_log: list[tuple[float, str, str | None]] = []
        self._lock = threading.Lock()
        #: a fault pin that is served in the end (cdn503) shows its own image
        self._fault_image = {f"{pin.fault}-{pin.id}": pin.image or 0 for board in self.boards.values()
                             for pin in board.pins if pin.fault}

    # -- control ----------------------------------------------------------------------------------

    def inject(self, path: str, faults: list[str], page: int | None = None) -> None:
        """The next requests to ``path`` (and page index ``page``, when given) get ``faults`` in order:
        ``429``, ``429:<seconds>`` (with Retry-After), ``500``, ``503``, ``truncated`` (a 200 with half the JSON),
        ``hang:<seconds>`` (answer late), ``repeat`` (the page's bookmark is the one just used)."""
        self._script.setdefault((path, page), []).extend(faults)

    def kill_at(self, request_number: int, pid: int, kind: str | None = None) -> None:
        """SIGKILL ``pid`` at the first request numbered ``request_number`` or later (of ``kind`` when given:
        ``image`` or an API kind such as ``board_pins``), before answering it; ``killed`` records the kind."""
        self._kill = (request_number, pid, kind)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/v5"

    @property
    def cdn_host(self) -> str:
        return f"127.0.0.1:{self.cdn_port}"

    def image_url(self, key: str, size: str = "1200x") -> str:
        return f"http://{self.cdn_host}/{size}/{key}.jpg"

    def start(self) -> FakePinterest:
        import uvicorn

        sockets = []
        for _ in range(2):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        self.api_port, self.cdn_port = (sock.getsockname()[1] for sock in sockets)
        config = uvicorn.Config(self, lifespan="off", log_level="error", access_log=False, http="h11", loop="asyncio",
                                timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": sockets}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake Pinterest did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- HTTP -------------------------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        kind = "image" if scope["server"][1] == self.cdn_port else _kind(scope["path"])
        with self._lock:
            self.total += 1
            number = self.total
            if self._kill and number >= self._kill[0] and self._kill[2] in (None, kind):
                os.kill(self._kill[1], signal.SIGKILL)
                self.killed.append(kind)
                self._kill = None
        if self.latency:
            await asyncio.sleep(self.latency)
        if number > self.max_requests:
            self.violations.append(f"more than {self.max_requests} requests")
            status, extra, body = 503, {}, _error(503, "the fake's request budget is spent")
        elif scope["server"][1] == self.cdn_port:
            status, extra, body = self._cdn(scope["path"], headers)
        else:
            status, extra, body = await self._api(scope["path"], parse_qs(scope["query_string"].decode()), headers)
        await _respond(send, status, extra, body)

    async def _api(self, path: str, query: dict, headers: dict):
        if path == "/_fake/counts":  # the benchmark's view of the counters (no token needed: loopback only)
            return 200, {}, json.dumps({"counts": self.counts, "page_sizes": self.page_sizes, "total": self.total}).encode()
        kind = _kind(path)
        self.counts[kind] += 1
        bookmark = (query.get("bookmark") or [None])[0]
        self.api_log.append((time.monotonic(), path, bookmark))
        position = self._bookmarks.get(bookmark) if bookmark else None
        page_size_text = (query.get("page_size") or ["25"])[0]
        page_size = int(page_size_text) if page_size_text.isdigit() else 0
        if kind != "user_account":  # the one endpoint without pages
            self.page_sizes[page_size] += 1
        effective = min(page_size, self.page_cap) if page_size else 1
        fault = self._next_fault(path, (position[1] if position else 0) // effective)
        if fault:
            answer = await self._fault_answer(fault, path, query, headers, page_size, position, bookmark)
            if answer is not None:
                return answer
        return self._route(path, query, headers, page_size, position, bookmark)

    def _next_fault(self, path: str, page: int) -> str | None:
        for key in ((path, page), (path, None)):
            if self._script.get(key):
                return self._script[key].pop(0)
        return None

    async def _fault_answer(self, fault, path, query, headers, page_size, position, bookmark):
        name, _, value = fault.partition(":")
        if name == "429":
            return 429, {"retry-after": value} if value else {}, _error(8, "Rate limit exceeded. Please try again later.")
        if name in ("500", "503"):
            return int(name), {}, _error(int(name), "Internal error")
        if name == "hang":
            await asyncio.sleep(float(value))
            return None
        status, extra, body = self._route(path, query, headers, page_size, position, bookmark)
        if name == "truncated":
            return status, extra, body[: len(body) // 2]
        if name == "repeat" and status == 200:
            data = json.loads(body)
            data["bookmark"] = bookmark or self._bookmark(path, 0)
            return status, extra, json.dumps(data).encode()
        return status, extra, body

    def _route(self, path, query, headers, page_size, position, bookmark):
        token = headers.get("authorization", "")
        user = self.by_token.get(token[7:]) if token.startswith("Bearer ") else None
        if user is None:
            return 401, {}, _error(2, "Authentication failed.")
        user.requests += 1
        if user.expire_after is not None and user.requests > user.expire_after:
            return 401, {}, _error(3, "Authorization failed: the access token has expired.")
        if not 1 <= page_size <= 250 and path != "/v5/user_account":
            return 400, {}, _error(1, "page_size must be between 1 and 250")
        if bookmark and position is None:
            return 400, {}, _error(1, "Invalid bookmark")
        if path == "/v5/user_account":
            return 200, {}, json.dumps({"username": user.username, "id": user.id, "account_type": "PINNER",
                                        "board_count": len(user.boards)}).encode()
        if path == "/v5/boards":
            return self._page(path, [self._board_json(b) for b in user.boards if not b.deleted], page_size, position)
        match = re.fullmatch(r"/v5/boards/(\d+)/(pins|sections)(?:/(\d+)/pins)?", path)
        board = self.boards.get(match.group(1)) if match else None
        if board is None or board.deleted or board not in user.boards:
            return 404, {}, _error(404, "Board not found.")
        if match.group(2) == "sections" and match.group(3) is None:
            return self._page(path, [{"id": sid, "name": name} for sid, name in board.sections], page_size, position)
        if match.group(3) is not None:
            if match.group(3) not in {sid for sid, _ in board.sections}:
                return 404, {}, _error(404, "Board or section not found.")
            pins = [pin for pin in board.pins if pin.section_id == match.group(3)]
        else:
            pins = [pin for pin in board.pins if self.section_pins_in_board or pin.section_id is None]
        answer = self._page(path, [self._pin_json(pin, board) for pin in pins], page_size, position)
        if match.group(3) is None:
            board.pages_served += 1
            if board.delete_after_pages is not None and board.pages_served >= board.delete_after_pages:
                board.deleted = True
        return answer

    def _page(self, path: str, items: list, page_size: int, position):
        size = min(page_size, self.page_cap)
        offset = position[1] if position else 0
        following = offset + size
        bookmark = self._bookmark(path, following) if following < len(items) else None
        return 200, {}, json.dumps({"items": items[offset:following], "bookmark": bookmark}).encode()

    def _bookmark(self, path: str, offset: int) -> str:
        token = hashlib.sha1(f"{path}:{offset}".encode()).hexdigest()[:20]
        self._bookmarks[token] = (path, offset)
        return token

    def _board_json(self, board: FakeBoard) -> dict:
        return {"id": board.id, "name": board.name, "description": f"{board.name} ideas", "privacy": "PUBLIC",
                "owner": {"username": board.owner}, "pin_count": len(board.pins), "collaborator_count": 0,
                "created_at": "2020-05-01T10:00:00"}

    def _images_json(self, key: str) -> dict:
        host = "https://images.example.invalid" if key.startswith("foreign") else f"http://{self.cdn_host}"
        shapes = {"1200x": (1200, 900), "600x": (600, 450), "400x300": (400, 300), "150x150": (150, 150)}
        return {size: {"width": w, "height": h, "url": f"{host}/{size}/{key}.jpg"} for size, (w, h) in shapes.items()}

    def _pin_json(self, pin: FakePin, board: FakeBoard) -> dict:
        key = f"{pin.fault}-{pin.id}" if pin.fault else f"img{pin.image}"
        if pin.media_type == "video":
            media = {"media_type": "video", "images": self._images_json(key), "cover_image_url": "", "duration": 8000.0,
                     "video_url": None, "width": 720, "height": 1280}
        elif pin.media_type == "multiple_images":
            keys = [key] + [f"img{index}" for index in pin.extra_images]
            media = {"media_type": "multiple_images",
                     "items": [{"item_type": "image", "title": None, "images": self._images_json(k)} for k in keys]}
        else:
            media = {"media_type": "image", "images": self._images_json(key)}
        return {"id": pin.id, "created_at": pin.created_at, "link": f"https://example.com/{pin.id}", "title": pin.title,
                "description": f"pin {pin.id}", "dominant_color": "#6E7874", "alt_text": None, "board_id": board.id,
                "board_section_id": pin.section_id, "board_owner": {"username": board.owner}, "media": media,
                "parent_pin_id": None, "is_owner": True, "is_standard": True, "has_been_promoted": False,
                "creative_type": "REGULAR"}

    def _cdn(self, path: str, headers: dict):
        self.counts["image"] += 1
        if "authorization" in headers:
            self.violations.append("the CDN was sent an Authorization header")
        match = re.fullmatch(r"/(1200x|600x|400x300|150x150)/([\w-]+)\.jpg", path)
        if not match:
            return 404, {}, b"not found"
        self.image_sizes[match.group(1)] += 1
        key = match.group(2)
        fault = key.split("-")[0] if "-" in key else None
        self._cdn_seen[key] += 1
        if fault == "html":
            return 200, {"content-type": "image/jpeg"}, HTML_PAGE
        if fault == "oversized":
            return 200, {"content-type": "image/jpeg"}, _chunks(b"\xff\xd8\xff\xe0" + bytes(self.oversize))
        if fault == "cdn404":
            return 404, {}, b"not found"
        if fault == "cdn503" and self._cdn_seen[key] == 1:
            return 503, {}, b"try again"
        index = int(key[3:]) if key.startswith("img") else self._fault_image.get(key, 0)
        return 200, {"content-type": "image/jpeg"}, self.images[index % len(self.images)]


def _kind(path: str) -> str:
    if path == "/v5/user_account":
        return "user_account"
    if path == "/v5/boards":
        return "boards"
    if re.fullmatch(r"/v5/boards/\d+/sections/\d+/pins", path):
        return "section_pins"
    if path.endswith("/sections"):
        return "sections"
    return "board_pins" if path.endswith("/pins") else "other"


def _error(code: int, message: str) -> bytes:
    return json.dumps({"code": code, "message": message}).encode()


class _chunks:
    """A body sent in 64 KiB chunks without a Content-Length (as a misbehaving CDN might)."""

    def __init__(self, data: bytes):
        self.data = data


async def _respond(send, status: int, extra: dict, body) -> None:
    headers = [(b"content-type", extra.pop("content-type", "application/json").encode())]
    headers += [(key.encode(), str(value).encode()) for key, value in extra.items()]
    if isinstance(body, _chunks):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for start in range(0, len(body.data), 65536):
            await send({"type": "http.response.body", "body": body.data[start:start + 65536], "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def build_users(*, users: int, boards: int, pins: int | list[int], sections: int = 0, images: int = 1,
                seed: int = 0, first_image: int = 0) -> list[FakeUser]:
    """Users ``user0..`` (tokens ``token-user<i>-<seed>-secret``) with ``boards`` boards each; pin ``k`` of the
    world shows image ``first_image + k`` (mod ``images``); with ``sections``, every third pin is in a section."""
    counts = pins if isinstance(pins, list) else [pins] * (users * boards)
    world, pin_number, board_number = [], 0, 0
    for u in range(users):
        name = f"user{u}"
        user = FakeUser(name, str(7000 + u), f"token-{name}-{seed}-secret{'x' * 24}")
        for b in range(boards):
            board = FakeBoard(str(900000 + board_number), f"Board {b} of {name}", name)
            board.sections = [(str(550000 + board_number * 10 + s), f"Section {s}") for s in range(sections)]
            for k in range(counts[board_number]):
                section = board.sections[(k // 3) % sections][0] if sections and k % 3 == 0 else None
                month, day = 1 + (pin_number % 12), 1 + (pin_number % 28)
                board.pins.append(FakePin(str(810000000 + pin_number), board.id, (first_image + pin_number) % images,
                                          created_at=f"2023-{month:02d}-{day:02d}T12:00:00", section_id=section,
                                          title=f"../../Pin {pin_number} <title>"))
                pin_number += 1
            user.boards.append(board)
            board_number += 1
        world.append(user)
    return world


def tokens_file(path, users: list[FakeUser]) -> str:
    """Write the users' tokens one per line (with a comment and a blank line, as people write them)."""
    path.write_text("# consenting users' tokens\n\n" + "".join(user.token + "\n" for user in users))
    return str(path)


def load_images(folder, count: int) -> list[bytes]:
    """``count`` real images from a folders dataset (sorted paths, cycling through its class folders)."""
    from pathlib import Path

    classes = sorted(p for p in Path(folder).iterdir() if p.is_dir())
    files = [sorted(c.iterdir()) for c in classes]
    chosen = [files[i % len(files)][i // len(files)] for i in range(count)]
    return [p.read_bytes() for p in chosen]


def main(argv: list[str] | None = None) -> None:
    """Serve a fake Pinterest in this process until stdin closes (for the benchmark); writes its address to --info."""
    import argparse
    import io
    import sys
    from pathlib import Path

    from PIL import Image

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--pins", required=True, help="pins per board, comma-separated (one user)")
    parser.add_argument("--images", required=True, help="a folders dataset of real images")
    parser.add_argument("--count", type=int, default=500, help="distinct images served")
    parser.add_argument("--width", type=int, default=600, help="images are resized to this width (0: as they are)")
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--info", required=True, help="JSON file written once serving: api_base, cdn_host, token")
    args = parser.parse_args(argv)
    images = load_images(args.images, args.count)
    if args.width:
        resized = []
        for data in images:
            image = Image.open(io.BytesIO(data)).convert("RGB")
            image = image.resize((args.width, max(1, round(image.height * args.width / image.width))), Image.Resampling.BICUBIC)
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=85)
            resized.append(buffer.getvalue())
        images = resized
    pins = [int(n) for n in args.pins.split(",")]
    users = build_users(users=1, boards=len(pins), pins=pins, images=len(images))
    fake = FakePinterest(users, images, latency=args.latency, max_requests=10_000_000).start()
    info = {"api_base": fake.api_base, "cdn_host": fake.cdn_host, "token": users[0].token, "pins": pins,
            "image_bytes": sum(len(data) for data in images) / len(images)}
    Path(args.info).write_text(json.dumps(info))
    try:
        sys.stdin.read()
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
