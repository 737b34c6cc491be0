"""`pintopic serve`'s HTTP API against the real app and a real (tiny, untrained-backbone) model: answers equal to
`pintopic predict`, every bad input a clear 4xx, limits, keys, overload, metrics."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image
from fastapi.testclient import TestClient
from hostile import HOSTILE_IMAGES, huge_png_header
from servekit import files_of, settings, wait_ready

KEY = "k3y-for-tests-0123456789abcdef"
#: The status each hostile file's image gets from the service.
HOSTILE_CODES = {"ok": 200, "too_large": 413, "unsupported": 415, "empty": 422, "truncated": 422, "not_an_image": 422}


@pytest.fixture(scope="module")
def models_dir(serve_models_dir) -> Path:
    return serve_models_dir


def pair(models_dir: Path, classifier: str) -> Path:
    return next(models_dir.glob(f"*__{classifier}"))


def make_client(folders, api_keys=None, **limits) -> TestClient:
    from pintopic.serve.app import create_app
    from pintopic.serve.auth import ApiKeys
    from pintopic.serve.models import load_models

    return TestClient(create_app(load_models(folders), settings(**limits), api_keys and ApiKeys(api_keys)))


@pytest.fixture(scope="module")
def client(models_dir):
    with make_client([models_dir / "ensemble", pair(models_dir, "logreg")], max_files=4, queue=16) as client:
        wait_ready(client)
        yield client


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("uploads")
    return [make_image(folder / f"{name}.png", color=color, seed=500 + i)
            for i, (name, color) in enumerate([("reddish", (210, 40, 35)), ("greenish", (40, 190, 50)),
                                               ("bluish", (35, 45, 210))])]


def test_models_listing_and_health(client, models_dir):
    listing = client.get("/v1/models").json()["models"]
    names = [model["name"] for model in listing]
    assert names == ["ensemble", pair(models_dir, "logreg").name]
    for model in listing:
        assert [c["category"] for c in model["categories"]] == ["blue", "green", "red"]
        assert model["backbones"] == ["timm:test_efficientnet"] and model["state"] == "ready"
        assert 0.0 <= model["metrics"]["test_f1_macro"] <= 1.0 and model["metrics"]["n_test"] > 0
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["ready"] is True
    assert "/v1/models/{name}/predict" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("model", ["logreg", "ensemble"])
def test_predictions_equal_pintopic_predict(client, models_dir, images, model):
    from pintopic.predict import predict

    folder = models_dir / "ensemble" if model == "ensemble" else pair(models_dir, model)
    response = client.post(f"/v1/models/{folder.name}/predict?top_k=3", files=files_of(*images))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == folder.name and body["backbones"] == ["timm:test_efficientnet"] and body["top_k"] == 3
    expected = predict(folder, images, top_k=3)
    assert [image["filename"] for image in body["images"]] == [path.name for path in images]
    for answer, reference in zip(body["images"], expected):
        assert answer["status"] == 200 and answer["score_kind"] == reference["score_kind"]
        scores = [entry["score"] for entry in answer["top"]]
        assert scores == sorted(scores, reverse=True) and len(scores) == 3
        assert [e["category"] for e in answer["top"]] == [e["category"] for e in reference["top"]]
        assert np.allclose(scores, [e["score"] for e in reference["top"]], rtol=0, atol=1e-5)
        assert answer["top"][0]["display_name"] == answer["top"][0]["category"]  # plain names display as themselves
        assert set(answer["timing_ms"]) == {"decode", "queue", "model", "batch_size", "total"}
    assert [image["top"][0]["category"] for image in body["images"]] == ["red", "green", "blue"]
    one = client.post(f"/v1/models/{folder.name}/predict?top_k=1", files=files_of(images[0])).json()["images"][0]
    assert len(one["top"]) == 1 and one["top"][0]["category"] == "red"


@pytest.mark.parametrize("name,status", [(name.decode("utf-8", "replace"), status) for name, status, _ in HOSTILE_IMAGES])
def test_each_hostile_file_gets_its_status_and_reason(client, tmp_path, name, status):
    writer = next(w for n, s, w in HOSTILE_IMAGES if n.decode("utf-8", "replace") == name)
    path = tmp_path / "upload.bin"
    writer(os.fsencode(path))
    response = client.post("/v1/models/ensemble/predict", files=[("images", (name, path.read_bytes(), "image/png"))])
    assert response.status_code == HOSTILE_CODES[status], response.text
    (image,) = response.json()["images"]
    assert image["status"] == HOSTILE_CODES[status] and image["filename"] == name
    if status == "ok":
        assert image["top"][0]["category"] in {"red", "green", "blue"}
    else:
        assert image["reason"] == status and image["error"].startswith(status)
        assert response.json()["detail"].startswith("no image could be used: ")


def test_mixed_request_answers_each_image(client, images):
    upload = files_of(images[0]) + [("images", ("notes.txt", b"not an image", "text/plain")),
                                    ("images", ("bomb.png", huge_png_header(60000, 60000), "image/png"))]
    response = client.post("/v1/models/ensemble/predict", files=upload)
    assert response.status_code == 200
    good, text, bomb = response.json()["images"]
    assert good["status"] == 200 and good["top"][0]["category"] == "red"
    assert (text["status"], text["reason"]) == (422, "not_an_image")
    assert (bomb["status"], bomb["reason"]) == (413, "too_large") and "3,600,000,000 pixels" in bomb["error"]
    both_bad = client.post("/v1/models/ensemble/predict", files=upload[1:])
    assert both_bad.status_code == 422 and "notes.txt: not_an_image" in both_bad.json()["detail"]


@pytest.mark.parametrize("query,status,reason", [
    ("top_k=0", 422, "greater than or equal to 1"),
    ("top_k=abc", 422, "valid integer"),
    ("top_k=51", 422, "less than or equal to 50"),
    ("top_k=4", 422, "top_k must be between 1 and 3"),
])
def test_bad_top_k(client, images, query, status, reason):
    response = client.post(f"/v1/models/ensemble/predict?{query}", files=files_of(images[0]))
    assert response.status_code == status and reason in response.text


def test_request_level_errors(client, images):
    post = client.post
    unknown = post("/v1/models/nope/predict", files=files_of(images[0]))
    assert unknown.status_code == 404 and "no model named 'nope'; served: ensemble" in unknown.json()["detail"]
    assert post("/v1/models/ensemble/predict", json={"x": 1}).status_code == 415
    empty_form = post("/v1/models/ensemble/predict", content=b"--b--\r\n",
                      headers={"content-type": "multipart/form-data; boundary=b"})
    assert empty_form.status_code == 400 and "no image in the request" in empty_form.json()["detail"]
    broken = post("/v1/models/ensemble/predict", content=b"garbage without boundaries",
                  headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert broken.status_code == 400
    no_boundary = post("/v1/models/ensemble/predict", content=b"x", headers={"content-type": "multipart/form-data"})
    assert no_boundary.status_code == 400 and "malformed multipart body" in no_boundary.json()["detail"]
    field = post("/v1/models/ensemble/predict", files=files_of(images[0]), data={"top_k": "2"})
    assert field.status_code == 400 and "top_k is a query parameter" in field.json()["detail"]
    too_many = post("/v1/models/ensemble/predict", files=files_of(*images, *images))
    assert too_many.status_code == 413 and "at most 4 images per request" in too_many.json()["detail"]
    assert client.get("/v1/models/ensemble/results").json()["row"]["classifier"] == "ensemble"


def test_upload_byte_limit_is_enforced_while_streaming(models_dir, images):
    import anyio
    import httpx

    sent = []

    async def body():  # a chunked body (no Content-Length): the app must stop reading once past the limit
        yield b'--b\r\nContent-Disposition: form-data; name="images"; filename="big.png"\r\n\r\n'
        for _ in range(64):
            sent.append(1)
            yield b"x" * 16384

    async def post_streamed(app):  # httpx's ASGI transport hands the body over chunk by chunk, as a server does
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service.test") as http:
            return await http.post("/v1/models/ensemble/predict", content=body(),
                                   headers={"content-type": "multipart/form-data; boundary=b"})

    with make_client([models_dir / "ensemble"], max_upload_bytes=50_000, max_pixels=1000) as client:
        wait_ready(client)
        streamed = anyio.run(post_streamed, client.app)
        assert streamed.status_code == 413 and "larger than the limit of 50,000 bytes" in streamed.json()["detail"]
        assert len(sent) == 4  # 4 x 16 KiB > 50,000: the other 60 chunks were never read
        declared = client.post("/v1/models/ensemble/predict", files=[("images", ("big.png", b"0" * 60_000, "image/png"))])
        assert declared.status_code == 413 and "60," in declared.json()["detail"]
        small = client.post("/v1/models/ensemble/predict", files=files_of(images[0]))  # 48x40 = 1,920 > 1,000 pixels
        assert small.status_code == 413 and small.json()["images"][0]["reason"] == "too_large"


def test_api_keys(models_dir, tmp_path, images):
    from pintopic.errors import PintopicError
    from pintopic.serve.auth import ApiKeys

    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"# service keys\n\n{KEY}\nanother-key-0123456789\n")
    keys = ApiKeys.from_file(keys_file)
    assert len(keys) == 2 and keys.accepts(KEY) and not keys.accepts(KEY[:-1]) and not keys.accepts("")
    assert KEY not in repr(vars(keys))  # only digests are kept
    with make_client([models_dir / "ensemble"], api_keys=[KEY]) as client:
        wait_ready(client)
        missing = client.get("/v1/models")
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        assert "missing API key" in missing.json()["detail"]
        wrong = client.post("/v1/models/ensemble/predict", files=files_of(images[0]), headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid API key"
        assert client.get("/v1/models", headers={"Authorization": "Basic " + KEY}).status_code == 401
        good = client.post("/v1/models/ensemble/predict", files=files_of(images[0]), headers={"Authorization": f"Bearer {KEY}"})
        assert good.status_code == 200 and good.json()["images"][0]["top"][0]["category"] == "red"
        assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200
    for text, message in [("", "holds no key"), ("short\n", "shorter than 16")]:
        keys_file.write_text(text)
        with pytest.raises(PintopicError, match=message):
            ApiKeys.from_file(keys_file)
    with pytest.raises(PintopicError, match="not found"):
        ApiKeys.from_file(tmp_path / "missing.txt")


def test_full_queue_answers_503_with_retry_after(models_dir, images):
    with make_client([models_dir / "ensemble"], queue=1, max_files=1) as client:
        wait_ready(client)
        batcher = client.app.state.service.batchers["ensemble"]
        entered, release, run = threading.Event(), threading.Event(), batcher.run_batch

        def blocked(items):
            entered.set()
            assert release.wait(30)
            return run(items)

        batcher.run_batch = blocked
        first: dict = {}
        worker = threading.Thread(target=lambda: first.update(
            response=client.post("/v1/models/ensemble/predict", files=files_of(images[1]))))
        worker.start()
        try:
            assert entered.wait(30)
            busy = client.post("/v1/models/ensemble/predict", files=files_of(images[0]))
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            assert "queue full" in busy.json()["detail"]
        finally:
            release.set()
            worker.join(30)
        assert first["response"].status_code == 200
        assert first["response"].json()["images"][0]["top"][0]["category"] == "green"
        assert client.post("/v1/models/ensemble/predict", files=files_of(images[0])).status_code == 200
        assert batcher.admitted == 0


def test_not_ready_until_warm(models_dir, images):
    client = make_client([models_dir / "ensemble"])  # no lifespan: nothing warmed
    assert client.get("/readyz").status_code == 503 and client.get("/readyz").json()["models"] == {"ensemble": "loading"}
    response = client.post("/v1/models/ensemble/predict", files=files_of(images[0]))
    assert response.status_code == 503 and "not ready" in response.json()["detail"] and "retry-after" in response.headers


def test_metrics_in_prometheus_text_format(client, images):
    from prometheus_client.parser import text_string_to_metric_families

    client.post("/v1/models/ensemble/predict", files=files_of(*images))
    client.get("/v1/models/nope/results")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    requests = {(s.labels["route"], s.labels["status"]): s.value for s in families["pintopic_requests"].samples
                if s.name == "pintopic_requests_total"}
    assert requests[("/v1/models/{name}/predict", "200")] >= 1 and requests[("/v1/models/{name}/results", "404")] == 1
    latency = [s for s in families["pintopic_request_duration_seconds"].samples if s.name.endswith("_count")]
    assert any(s.labels["route"] == "/v1/models/{name}/predict" and s.value >= 1 for s in latency)
    batch_counts = [s for s in families["pintopic_batch_size"].samples
                    if s.name == "pintopic_batch_size_count" and s.labels["model"] == "ensemble"]
    batch_sums = [s for s in families["pintopic_batch_size"].samples
                  if s.name == "pintopic_batch_size_sum" and s.labels["model"] == "ensemble"]
    assert batch_counts[0].value >= 1 and batch_sums[0].value >= 3  # the three images went through some batch
    queue = {s.labels["model"]: s.value for s in families["pintopic_queue_length"].samples}
    assert queue["ensemble"] == 0
    images_ok = {(s.labels["model"], s.labels["outcome"]): s.value for s in families["pintopic_images"].samples
                 if s.name == "pintopic_images_total"}
    assert images_ok[("ensemble", "ok")] >= 3


def test_cors_is_off_by_default(client, models_dir):
    plain = client.get("/v1/models", headers={"Origin": "http://elsewhere.test"})
    assert "access-control-allow-origin" not in plain.headers
    with make_client([models_dir / "ensemble"], cors_origins=["http://elsewhere.test"]) as allowed:
        answer = allowed.get("/v1/models", headers={"Origin": "http://elsewhere.test"})
        assert answer.headers["access-control-allow-origin"] == "http://elsewhere.test"


def test_page_and_its_files_are_served_with_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="files"' in page.text and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # nothing from outside (no CDN)
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "innerHTML" not in script.text  # server and file-name text is only ever set as text
