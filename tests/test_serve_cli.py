"""`pintopic serve`'s front door: settings, the config's [serve] section, which models a config serves, and the
refusals (exposed address without keys, duplicate names, bad model folders) before anything listens."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pintopic.cli import main
from pintopic.errors import PintopicError


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.8.9.1", True), ("localhost", True), ("::1", True),
                                           ("[::1]", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
                                           ("example.com", False)])
def test_loopback_hosts(host, loopback):
    from pintopic.serve.server import is_loopback

    assert is_loopback(host) is loopback


def test_settings_defaults_and_checks():
    from pintopic.imageio import DEFAULT_MAX_PIXELS
    from pintopic.serve.settings import ServeSettings

    settings = ServeSettings.from_mapping({"port": 9000, "cors_origins": "http://a.test, http://b.test", "max_pixels": 0})
    assert (settings.host, settings.port, settings.max_pixels) == ("127.0.0.1", 9000, DEFAULT_MAX_PIXELS)
    assert settings.cors_origins == ("http://a.test", "http://b.test") and settings.decode_threads() >= 1
    for bad, message in [({"queue": 2, "max_files": 4}, "at least max_files"), ({"max_batch": 0}, "at least 1"),
                         ({"max_wait_ms": -1}, "negative"), ({"colour": "red"}, "unknown serve setting")]:
        with pytest.raises(PintopicError, match=message):
            ServeSettings.from_mapping(bad)


def test_exposed_address_needs_keys_or_insecure(tmp_path, capsys, serve_models_dir, monkeypatch):
    assert main(["serve", str(serve_models_dir / "ensemble"), "--host", "0.0.0.0"]) == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in capsys.readouterr().err
    started = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **options: started.update(app=app, **options))
    assert main(["serve", str(serve_models_dir / "ensemble"), "--host", "0.0.0.0", "--insecure", "--port", "8123",
                 "--max-batch", "4", "--quiet"]) == 0
    assert (started["host"], started["port"]) == ("0.0.0.0", 8123)
    service = started["app"].state.service
    assert service.settings.max_batch == 4 and service.ready  # warmed before listening
    keys = tmp_path / "keys"
    keys.write_text("a-long-enough-key-0123456789\n")
    assert main(["serve", str(serve_models_dir / "ensemble"), "--host", "0.0.0.0", "--api-keys", str(keys), "-q"]) == 0


def test_bad_model_folders_are_refused(tmp_path, capsys, serve_models_dir):
    ensemble = str(serve_models_dir / "ensemble")
    assert main(["serve", ensemble, ensemble]) == 2
    assert "two models are named 'ensemble'" in capsys.readouterr().err
    assert main(["serve", str(tmp_path)]) == 2
    assert "is not a model folder" in capsys.readouterr().err
    assert main(["serve"]) == 2
    assert "give the model folders to serve" in capsys.readouterr().err


def _fake_models(run: Path, rows: list[tuple[str, str, float]], ensemble: bool) -> None:
    models = run / "results" / "models"
    for key, classifier, _ in rows:
        (models / f"{key}__{classifier}").mkdir(parents=True)
    if ensemble:
        (models / "ensemble").mkdir(parents=True)
        (models / "ensemble" / "model.json").write_text("{}")
    results = {"rows": [{"key": k, "classifier": c, "cv_f1_macro": f, "test_f1_macro": 0.5} for k, c, f in rows]}
    (run / "results" / "results.json").write_text(json.dumps(results))


def test_config_serves_the_ensemble_else_the_best_pair_by_cv(tmp_path):
    from pintopic.serve.models import config_model_folders

    rows = [("lite0-aa", "knn", 0.6), ("lite1-bb", "lsvm", 0.7), ("lite1-bb", "nn", 0.65)]
    _fake_models(tmp_path / "with", rows, ensemble=True)
    assert config_model_folders(tmp_path / "with", []) == [tmp_path / "with" / "results" / "models" / "ensemble"]
    _fake_models(tmp_path / "without", rows, ensemble=False)
    assert config_model_folders(tmp_path / "without", []) == [tmp_path / "without" / "results" / "models" / "lite1-bb__lsvm"]
    named = config_model_folders(tmp_path / "with", ["lite0-aa__knn", "/elsewhere/x"])
    assert named == [tmp_path / "with" / "results" / "models" / "lite0-aa__knn", Path("/elsewhere/x")]
    with pytest.raises(PintopicError, match="run the study first"):
        config_model_folders(tmp_path / "empty", [])


def test_serve_section_of_a_config(tmp_path, serve_models_dir, monkeypatch):
    from pintopic.config import load_config

    run = serve_models_dir.parent.parent
    config = tmp_path / "study.toml"
    config.write_text(f'[run]\nfolder = "{run}"\n[dataset]\nsource = "{tmp_path}"\n'
                      '[serve]\nport = 8124\napi_keys = "keys.txt"\nmodels = ["ensemble", "models/x"]\nmax_files = 2\n')
    serve = load_config(config)["serve"]
    assert serve["api_keys"] == str(tmp_path / "keys.txt") and serve["models"] == ["ensemble", str(tmp_path / "models" / "x")]
    assert serve["host"] == "127.0.0.1" and serve["queue"] == 64  # defaults filled in
    config.write_text(f'[run]\nfolder = "{run}"\n[dataset]\nsource = "{tmp_path}"\n[serve]\nport = 8124\n')
    started = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **options: started.update(app=app, **options))
    assert main(["serve", "--config", str(config), "--set", "serve.max_files=2", "--port", "8125", "-q"]) == 0
    service = started["app"].state.service
    assert started["port"] == 8125 and service.settings.max_files == 2 and list(service.models) == ["ensemble"]
