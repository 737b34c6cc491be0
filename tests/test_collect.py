"""``pintopic collect`` against a local fake Pinterest (tests/fake_pinterest.py, loopback only, bounded):
the crawl layout ingest reads, faults retried or reported, tokens kept secret, reruns, kill-and-resume."""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from fake_pinterest import FakePin, FakePinterest, build_users, load_images, tokens_file

from pintopic.collect import collect
from pintopic.collect.client import RetryPolicy
from pintopic.dataset import ingest, load_manifest

REPO = Path(__file__).resolve().parent.parent
FAST_RETRY = RetryPolicy(attempts=4, initial=0.01, maximum=0.05, jitter=0.01)


@pytest.fixture(scope="module")
def photos(natural_images) -> list[bytes]:
    """96 real photos (12 per natural-images class, classes cycling: photo i is of class i % 8)."""
    return load_images(natural_images, 96)


def run_collect(fake: FakePinterest, users, out: Path, **options) -> dict:
    options = {"api_base": fake.api_base, "allow_hosts": [fake.cdn_host], "retry": FAST_RETRY, "rate": 500.0,
               "progress": False, **options}
    return collect(out, tokens_file(out.parent / f"{out.name}-tokens.txt", users), **options)


def pin_folders(out: Path) -> dict[str, Path]:
    """pin id -> its folder, for every complete pin folder (one with pin.json) of the crawl."""
    folders = [path.parent for path in out.glob("*/*/*/pin.json")]
    ids = [folder.name for folder in folders]
    assert len(ids) == len(set(ids)), "a pin was written twice"
    return dict(zip(ids, folders))


def crawl_digest(out: Path) -> dict[str, str]:
    """relative path -> SHA-256 of every file of the crawl (hidden state, the summary and the log excluded)."""
    skip = {"collect.json", "collect-pins.jsonl"}
    return {str(path.relative_to(out)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(out.rglob("*")) if path.is_file() and path.name not in skip
            and not any(part.startswith(".") for part in path.relative_to(out).parts)}


def test_collect_writes_the_crawl_layout_that_ingest_reads(photos, tmp_path: Path):
    users = build_users(users=1, boards=3, pins=[23, 7, 4], sections=2, images=len(photos))
    board0, board1, board2 = users[0].boards
    board0.pins[5].media_type = "video"
    board1.pins[0] = FakePin(board1.pins[0].id, board1.id, 40, media_type="multiple_images", extra_images=(41, 42))
    (tmp_path / "map.csv").write_text(f"board_id,owner,board,category\n{board0.id},,,Animals\n"
                                      f",USER0,{board1.name.upper()},Food & Drink\n")
    with FakePinterest(users, photos, page_cap=10) as fake:
        summary = run_collect(fake, users, tmp_path / "out", categories=tmp_path / "map.csv")
        assert fake.counts["board_pins"] == 3 + 1 + 1  # pages of 10 (the fake's cap): 23 -> 3, 7 -> 1, 4 -> 1
        assert fake.counts["sections"] == 3 and fake.counts["section_pins"] == 0  # section pins came with the board's
        assert set(fake.page_sizes) == {250}  # on every list call
        assert set(fake.image_sizes) == {"1200x"} and fake.violations == []
        capped = run_collect(fake, users, tmp_path / "capped", image_size="600x", multi_image="all", max_pins_per_board=5)
        assert fake.page_sizes[5] == 3 and set(fake.image_sizes) == {"1200x", "600x"}  # no more pins asked than taken

    out = tmp_path / "out"
    assert summary["complete"] and summary["counts"]["pins_on_disk"] == 22 + 7 + 4
    boards = json.loads((out / "user0" / "boards.json").read_text())
    assert [(b["slug"], b["category"]) for b in boards] == [(board0.id, "animals"), (board1.id, "food_drink"), (board2.id, None)]
    assert boards[0]["sections"] == [{"id": sid, "name": name} for sid, name in board0.sections]
    video = board0.pins[5].id
    assert summary["not_fetched"] == [{"user": "user0", "board_id": board0.id, "pin_id": video, "status": "skipped",
                                       "reason": "a video pin: videos are not collected"}]
    log = [json.loads(line) for line in (out / "collect-pins.jsonl").read_text().splitlines()]
    assert len(log) == 34 and [line["pin_id"] for line in log if line["outcome"] == "skipped"] == [video]

    folders = pin_folders(out)
    assert video not in folders and len(folders) == 33
    in_section = board0.pins[0]
    meta = json.loads((folders[in_section.id] / "pin.json").read_text())
    assert meta["section"] == {"id": in_section.section_id, "name": "Section 0"} and meta["image_size"] == "1200x"
    assert meta["title"].startswith("../../Pin")  # titles are kept as data, never used as names
    assert (folders[in_section.id] / f"{in_section.id}.jpg").read_bytes() == photos[in_section.image]
    assert sorted(p.name for p in folders[board1.pins[0].id].iterdir()) == [f"{board1.pins[0].id}.jpg", "pin.json"]
    assert all(part.isdigit() or part in ("boards.json", "pin.json") or part.split(".")[0].isdigit()
               for path in out.glob("user0/**/*") for part in path.relative_to(out / "user0").parts)

    run = tmp_path / "run"
    ingest(out, run, min_per_category=1, progress=False)
    manifest = load_manifest(run)
    assert len(manifest) == 33 and set(manifest["user"]) == {"user0"}
    by_board = manifest.groupby("board")["category"].agg(lambda c: sorted(set(c.dropna())))
    assert by_board[board0.id] == ["animals"] and by_board[board1.id] == ["food_drink"] and by_board[board2.id] == []
    assert manifest["status"].value_counts().to_dict() == {"ok": 29, "no_category": 4}

    capped_folders = pin_folders(tmp_path / "capped")
    assert len(capped_folders) == 5 + 5 + 4  # 5 per board at most (board 0's video is its sixth pin)
    multi = board1.pins[0].id
    assert sorted(p.name for p in capped_folders[multi].iterdir()) == [f"{multi}_{n}.jpg" for n in (1, 2, 3)] + ["pin.json"]
    assert (capped_folders[multi] / f"{multi}_2.jpg").read_bytes() == photos[41]
    assert capped["settings"]["image_size"] == "600x"


def test_faults_are_retried_or_reported_and_tokens_stay_secret(photos, tmp_path: Path, caplog, capsys):
    users = build_users(users=3, boards=3, pins=[30, 30, 12, 5, 5, 5, 6, 0, 0], images=len(photos))
    u0, u1, u2 = users
    faulty, deleted, flaky = u0.boards
    for index, fault in zip(range(3, 8), ("foreign", "html", "oversized", "cdn404", "cdn503")):
        faulty.pins[index].fault = fault
    deleted.delete_after_pages = 1
    u1.expire_after = 3  # user_account, boards, the first board's sections; then 401
    u2.boards = u2.boards[:1]
    with FakePinterest(users, photos, page_cap=10, oversize=2 * 1024 * 1024, max_requests=2000) as fake:
        fake.inject("/v5/boards", ["429"])
        fake.inject(f"/v5/boards/{faulty.id}/sections", ["500"])
        fake.inject(f"/v5/boards/{faulty.id}/pins", ["503", "truncated"], page=0)
        fake.inject(f"/v5/boards/{faulty.id}/pins", ["repeat"], page=1)
        fake.inject(f"/v5/boards/{faulty.id}/pins", ["429:1"], page=2)
        fake.inject(f"/v5/boards/{flaky.id}/pins", ["500", "hang:3"])
        caplog.set_level("DEBUG")
        summary = run_collect(fake, users, tmp_path / "out", max_image_bytes=1024 * 1024, timeout=1.5)
        waits = [later[0] - earlier[0] for earlier, later in zip(fake.api_log, fake.api_log[1:])
                 if earlier[1] == later[1] == f"/v5/boards/{faulty.id}/pins" and earlier[2] == later[2]]
        assert fake.violations == [] and fake.total < 400

    out = tmp_path / "out"
    assert max(waits) >= 0.95  # Retry-After: 1 was honoured
    records = {record["token_line"]: record for record in summary["users"]}
    stopped = records[4]
    assert stopped["user"] == "user1" and stopped["status"] == "stopped" and "HTTP 401" in stopped["reason"]
    assert [(board["status"], board["reason"]) for board in stopped["boards"]] == \
        [("pending", "not finished: the user's collection stopped")] * 3
    assert records[5]["status"] == "done" and records[5]["boards"][0]["pins_on_disk"] == 6  # the others go on
    boards = {board["id"]: board for board in records[3]["boards"]}
    assert boards[faulty.id]["status"] == "done" and boards[faulty.id]["pins_on_disk"] == 26
    assert boards[deleted.id]["status"] == "gone" and boards[deleted.id]["pins_on_disk"] == 10
    assert "disappeared" in boards[deleted.id]["reason"]
    assert boards[flaky.id]["status"] == "done" and boards[flaky.id]["pins_on_disk"] == 12
    reasons = {entry["pin_id"]: entry["reason"] for entry in summary["not_fetched"]}
    assert set(reasons) == {faulty.pins[i].id for i in (3, 4, 5, 6)}
    assert "not an allowed image host" in reasons[faulty.pins[3].id]
    assert "an HTML page, not an image" in reasons[faulty.pins[4].id]
    assert "limit of 1,048,576 bytes" in reasons[faulty.pins[5].id]
    assert "HTTP 404" in reasons[faulty.pins[6].id]
    assert not summary["complete"]
    requests = summary["this_run"]["requests"]
    assert requests["api.retries"] >= 7 and requests["images.retries"] >= 1
    assert summary["this_run"]["pins"]["repeated"] == 10  # the repeated page's pins, each written once
    assert len(pin_folders(out)) == 26 + 10 + 12 + 6

    captured = capsys.readouterr()
    texts = [caplog.text, captured.out, captured.err] + [p.read_bytes().decode("utf-8", "replace")
                                                         for p in out.rglob("*") if p.is_file()]
    assert "HTTP 401" in captured.err
    for user in users:
        assert not any(user.token in text or user.token[:20] in text for text in texts)


def test_a_rerun_fetches_only_new_pins_and_since_filters(photos, tmp_path: Path):
    users = build_users(users=1, boards=2, pins=[12, 8], images=len(photos))
    board = users[0].boards[0]
    with FakePinterest(users, photos, page_cap=5) as fake:
        first = run_collect(fake, users, tmp_path / "out")
        before = fake.counts["image"]
        board.pins[:0] = [FakePin(str(820000000 + n), board.id, 60 + n, created_at="2025-01-01T00:00:00") for n in range(3)]
        second = run_collect(fake, users, tmp_path / "out")
        assert fake.counts["image"] - before == 3
        since = run_collect(fake, users, tmp_path / "since", since="2023-07-01")
    assert first["pass"] == 1 and second["pass"] == 2
    assert second["this_run"]["pins"] == {"saved": 3, "on_disk": 20}
    assert second["counts"]["pins_on_disk"] == 23
    kept = [p for b in users[0].boards for p in b.pins if p.created_at >= "2023-07-01"]
    assert 0 < len(kept) < 23 and sorted(pin_folders(tmp_path / "since")) == sorted(p.id for p in kept)
    assert all(entry["status"] == "skipped" and "before --since 2023-07-01" in entry["reason"]
               for entry in since["not_fetched"])
    assert len(since["not_fetched"]) == 23 - len(kept)


def _collect_command(fake: FakePinterest, out: Path, tokens: str) -> list[str]:
    return [sys.executable, "-m", "pintopic", "collect", str(out), "--tokens", tokens, "--api-base", fake.api_base,
            "--allow-host", fake.cdn_host, "--rate", "500", "--concurrency", "4", "--quiet"]


def test_killed_at_five_points_resumes_to_a_byte_identical_crawl(photos, tmp_path: Path):
    users = build_users(users=2, boards=2, pins=[25, 14, 9, 20], sections=2, images=len(photos))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    tokens = tokens_file(tmp_path / "tokens.txt", users)
    with open(tokens, "a") as handle:
        handle.write("revoked-token-0123456789\n")  # line 5: refused, stops only that user; the run exits 1
    resumed = tmp_path / "resumed"
    with FakePinterest(users, photos, page_cap=6) as fake:  # one server: pin.json holds its image URLs
        done = subprocess.run(_collect_command(fake, tmp_path / "straight", tokens), env=env, cwd=REPO,
                              capture_output=True, text=True, check=False, timeout=120)
        assert done.returncode == 1 and "the token on line 5 (unknown user): HTTP 401" in done.stderr
        assert "revoked-token" not in done.stderr + done.stdout
        total = fake.total
        points = [total + point for point in sorted(random.Random(18).sample(range(10, total - 10), 5))]
        for point, kind in zip(points, ["image", "board_pins", "image", None, "image"]):
            process = subprocess.Popen(_collect_command(fake, resumed, tokens), env=env, cwd=REPO,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            fake.kill_at(max(point, fake.total + 1), process.pid, kind)
            _, error = process.communicate(timeout=120)
            assert process.returncode == -9, f"the collector was not killed at request {point}: {error}"
        assert fake.killed.count("image") >= 3 and "board_pins" in fake.killed  # mid-download and mid-listing
        assert 0 < len(pin_folders(resumed)) < 68
        final = subprocess.run(_collect_command(fake, resumed, tokens), env=env, cwd=REPO,
                               capture_output=True, text=True, check=False, timeout=120)
        assert final.returncode == 1, final.stderr
    assert len(pin_folders(tmp_path / "straight")) == 68
    assert crawl_digest(resumed) == crawl_digest(tmp_path / "straight")
    straight, again = (json.loads((folder / "collect.json").read_text()) for folder in (tmp_path / "straight", resumed))
    assert again["users"] == straight["users"] and again["not_fetched"] == straight["not_fetched"] == []
    assert again["this_run"]["pins"].get("saved", 0) < 68  # the last run only finished what the killed ones left
    assert not list(resumed.rglob(".*.tmp"))


@pytest.mark.parametrize("case", ["bad token line", "foreign folder", "plain http", "bad since"])
def test_bad_input_is_one_clear_line(case, tmp_path: Path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("good-token-0123456789\nnot a token with spaces\n" if case == "bad token line" else "t0123456789abcdef\n")
    out = tmp_path / "out"
    if case == "foreign folder":
        out.mkdir()
        (out / "thesis.docx").write_text("mine")
    extra = {"plain http": ["--api-base", "http://api.example.invalid/v5"], "bad since": ["--since", "last week"]}.get(case, [])
    result = subprocess.run([sys.executable, "-m", "pintopic", "collect", str(out), "--tokens", str(tokens), *extra],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and result.stderr.startswith("pintopic: error: ")
    assert "not a token with spaces" not in result.stderr  # a malformed line is named, never echoed
    expected = {"bad token line": "line 2: not an access token", "foreign folder": "is not empty",
                "plain http": "must be an https URL", "bad since": "--since must be a date"}[case]
    assert expected in result.stderr
    if case == "foreign folder":
        assert sorted(p.name for p in out.iterdir()) == ["thesis.docx"]


def test_list_calls_are_one_per_250_pins(photos, tmp_path: Path):
    users = build_users(users=1, boards=2, pins=[251, 3], images=len(photos))
    with FakePinterest(users, photos) as fake:
        summary = run_collect(fake, users, tmp_path / "out", image_size="150x150", concurrency=16)
        assert fake.counts["board_pins"] == math.ceil(251 / 250) + 1
        assert fake.page_sizes[250] == fake.counts["board_pins"] + fake.counts["boards"] + fake.counts["sections"]
    assert summary["counts"]["pins_on_disk"] == 254


def test_section_pins_missing_from_the_board_listing_are_listed_per_section(photos, tmp_path: Path):
    users = build_users(users=1, boards=2, pins=[20, 9], sections=2, images=len(photos))
    in_sections = [pin for board in users[0].boards for pin in board.pins if pin.section_id]
    with FakePinterest(users, photos, page_cap=10, section_pins_in_board=False) as fake:
        summary = run_collect(fake, users, tmp_path / "out")
        assert fake.counts["section_pins"] == 4  # one call per section (each under 250 pins)
    folders = pin_folders(tmp_path / "out")
    assert summary["complete"] and len(folders) == 29 and len(in_sections) == 10
    for pin in in_sections:
        section = json.loads((folders[pin.id] / "pin.json").read_text())["section"]
        assert section["id"] == pin.section_id and section["name"].startswith("Section ")


def test_a_collected_crawl_goes_through_ingest_extract_and_evaluate(photos, tmp_path: Path):
    users = build_users(users=1, boards=3, pins=12, images=len(photos))
    for klass, board in enumerate(users[0].boards):  # board b shows natural-images class b (airplane, car, cat)
        for number, pin in enumerate(board.pins):
            pin.image = klass + 8 * number
    rows = "".join(f"{board.id},{name}\n" for board, name in zip(users[0].boards, ("travel", "cars_motorcycles", "animals")))
    (tmp_path / "map.csv").write_text("board_id,category\n" + rows)
    with FakePinterest(users, photos) as fake:
        run_collect(fake, users, tmp_path / "out", categories=tmp_path / "map.csv")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = tmp_path / "run"
    for command in (["ingest", str(tmp_path / "out"), str(run), "--min-per-category", "3"],
                    ["extract", str(run), "--backbone", "timm:test_efficientnet", "--no-pretrained", "--runtime", "torch",
                     "--batch-size", "12", "--workers", "1"]):
        result = subprocess.run([sys.executable, "-m", "pintopic", *command, "--quiet"], env=env, cwd=REPO,
                                capture_output=True, text=True, check=False, timeout=300)
        assert result.returncode == 0, result.stderr
    from pintopic.classify import evaluate

    results = evaluate(run, classifiers=["knn"], cv=3, grids={"knn": {"k": [1, 3]}}, progress=False)
    assert json.loads((run / "results" / "results.json").read_text()) == json.loads(json.dumps(results))
    [row] = results["rows"]
    assert row["classifier"] == "knn" and row["best_params"]["k"] in (1, 3)
    assert sorted(json.loads((run / "dataset" / "dataset.json").read_text())["counts"]["by_category"].items()) == \
        [("animals", 12), ("cars_motorcycles", 12), ("travel", 12)]


def test_retry_after_is_read_in_both_forms_and_an_overlong_one_gives_up_at_once():
    import asyncio
    import email.utils
    import time
    from collections import Counter

    from pintopic.collect.client import (
        FetchError,
        TransientError,
        parse_retry_after,
        with_retries,
    )

    assert parse_retry_after("7") == 7.0 and parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert 55 <= parse_retry_after(email.utils.formatdate(time.time() + 60, usegmt=True)) <= 60
    calls, counts = [], Counter()

    async def rate_limited():
        calls.append(1)
        raise TransientError("HTTP 429 (rate limited) on GET /boards", 429, retry_after=3600.0)

    with pytest.raises(FetchError, match="Retry-After 3600 s is longer than 900 s: rerun later"):
        asyncio.run(with_retries(RetryPolicy(), counts, "api", rate_limited))
    assert len(calls) == 1 and counts["api.retries"] == 0


def test_the_content_check_reads_a_jpeg_to_its_last_byte(photos):
    import io

    from PIL import Image

    from pintopic.collect.client import FetchError
    from pintopic.collect.downloader import check_image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(photos[5])).convert("RGB").resize((1200, 896)).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()  # 1200 x 896: decoded at 1/8 scale by the check
    assert check_image(data).extension == "jpg"
    with pytest.raises(FetchError, match="truncated"):
        check_image(data[: len(data) * 9 // 10])
    with pytest.raises(FetchError, match="an HTML page"):
        check_image(b"<!DOCTYPE html><html><body>Sorry</body></html>")
