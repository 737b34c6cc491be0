"""The service on a real uvicorn server (loopback, free port) with a real Lite0 model on real photos: answers equal
to `pintopic predict`, the body limit on a real socket, and the web page in headless Chromium driven by Playwright."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import IN_CI
from servekit import fitted_run, live_server, settings

#: The photo categories of the Lite0 model (natural-images), 10 training photos each, and the photos uploaded.
CATEGORIES = ("cat", "dog", "flower", "car")
TRAIN_PER_CATEGORY = 10
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def lite0_service(natural_images, tmp_path_factory):
    """A live server for a Lite0 + logreg model fitted on 4 x 10 natural-images photos; yields (url, model folder, photos)."""
    from pintopic.serve.server import build_service

    base = tmp_path_factory.mktemp("lite0-serve")
    uploads = []
    for category in CATEGORIES:
        photos = sorted((natural_images / category).iterdir())
        (base / "photos" / category).mkdir(parents=True)
        for photo in photos[:TRAIN_PER_CATEGORY]:
            shutil.copy(photo, base / "photos" / category / photo.name)
        uploads.append(photos[TRAIN_PER_CATEGORY + 5])  # a photo the model never saw
    models = fitted_run(base / "photos", base / "run", backbone="lite0", pretrained=True, classifiers=["logreg"])
    (folder,) = models.iterdir()
    app, _ = build_service([folder], settings(max_upload_bytes=1_000_000, max_files=4, queue=8))
    with live_server(app) as url:
        yield url, folder, uploads


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_live_server_answers_like_pintopic_predict(lite0_service):
    import httpx

    from pintopic.predict import predict

    url, folder, uploads = lite0_service
    expected = predict(folder, uploads, top_k=4)
    with httpx.Client(base_url=url, timeout=60) as http:
        assert http.get("/readyz").json()["ready"] is True
        body = http.post(f"/v1/models/{folder.name}/predict", params={"top_k": 4},
                         files=[("images", (p.name, p.read_bytes(), "image/jpeg")) for p in uploads]).json()
        assert body["backbones"] == ["lite0"]
        for answer, reference, photo in zip(body["images"], expected, uploads):
            assert [e["category"] for e in answer["top"]] == [e["category"] for e in reference["top"]]
            assert np.allclose([e["score"] for e in answer["top"]], [e["score"] for e in reference["top"]], atol=1e-5)
            assert answer["top"][0]["category"] == photo.parent.name  # real weights: right on unseen photos
        single = [http.post(f"/v1/models/{folder.name}/predict", files=[("images", (p.name, p.read_bytes()))]).json()
                  for p in uploads]  # batch of one each: the same scores as in the batch of four
        for answer, reference in zip(single, body["images"]):
            assert abs(answer["images"][0]["top"][0]["score"] - reference["top"][0]["score"]) <= 1e-5


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_live_server_stops_reading_an_oversized_upload(lite0_service):
    import httpx

    url, folder, _ = lite0_service

    def body():  # chunked, no Content-Length: only counting while reading can catch it
        yield b'--b\r\nContent-Disposition: form-data; name="images"; filename="big.jpg"\r\n\r\n'
        for _ in range(400):  # 400 x 64 KiB = 26 MB against a 1 MB limit
            yield b"x" * 65536

    with httpx.Client(base_url=url, timeout=60) as http:
        response = http.post(f"/v1/models/{folder.name}/predict", content=body(),
                             headers={"content-type": "multipart/form-data; boundary=b"})
        assert response.status_code == 413 and "1,000,000 bytes" in response.json()["detail"]
        declared = http.post(f"/v1/models/{folder.name}/predict", files=[("images", ("big.jpg", b"x" * 2_000_000))])
        assert declared.status_code == 413 and "2,000,1" in declared.json()["detail"]  # refused from the header
        assert http.get("/healthz").status_code == 200  # and it is still up


@pytest.fixture(scope="module")
def playwright_chromium():
    if not Path(CHROMIUM).exists():
        message = "Chromium not installed (Debian package `chromium`; `make apt-data`)"
        if IN_CI:
            pytest.fail(message + " (required under CI=true)")
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_page_classifies_uploaded_photos_in_chromium(lite0_service, playwright_chromium, tmp_path):
    from playwright.sync_api import expect

    url, folder, uploads = lite0_service
    page = playwright_chromium.new_page(viewport={"width": 1280, "height": 760})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(url + "/")
    page.wait_for_selector(f"#model option[value='{folder.name}']", state="attached", timeout=30_000)
    page.set_input_files("#files", [str(path) for path in uploads])
    expect(page.locator(".card[data-category]")).to_have_count(len(uploads), timeout=60_000)  # selectors: no eval
    cards = page.query_selector_all(".card")
    shown = {card.query_selector(".name").inner_text(): card for card in cards}
    for photo in uploads:
        card = shown[photo.name]
        assert card.get_attribute("data-category") == photo.parent.name
        assert card.query_selector(".bar-row .bar-text").inner_text() == photo.parent.name  # the top bar names it
        assert len(card.query_selector_all(".bar-row")) == 3
    screenshot = tmp_path / "serve-page.png"
    page.screenshot(path=str(screenshot), full_page=False)
    if os.environ.get("PINTOPIC_SERVE_SCREENSHOT"):  # how the README's picture is made: the same test, kept
        shutil.copy(screenshot, os.environ["PINTOPIC_SERVE_SCREENSHOT"])
    page.click("button[data-view='results']")
    page.wait_for_selector("#confusion tr", timeout=30_000)
    assert page.locator("#results-table tr.own").count() == 1
    assert page.locator("#confusion tr").count() == len(CATEGORIES) + 1
    page.screenshot(path=str(tmp_path / "serve-results.png"))
    assert not errors, errors
    from PIL import Image

    with Image.open(screenshot) as image:
        assert image.size == (1280, 760) and len(image.convert("RGB").getcolors(1 << 20) or []) > 500
