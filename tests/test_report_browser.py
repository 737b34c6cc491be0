"""The report renders in a real browser: headless Chromium (Debian's `chromium`) takes a screenshot with content."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import IN_CI
from test_report import make_fake_run


@pytest.fixture(scope="module")
def chromium():
    from pintopic.report.screenshot import find_chromium

    browser = find_chromium()
    if browser is None:
        message = "Chromium not installed (Debian package `chromium`; `make apt-data`)"
        if IN_CI:
            pytest.fail(message + " (required under CI=true)")
        pytest.skip(message)
    return browser


@pytest.mark.timeout(240)
def test_report_renders_in_headless_chromium(chromium, tmp_path):
    from PIL import Image

    from pintopic.report import build_report
    from pintopic.report.screenshot import screenshot

    report = build_report(make_fake_run(tmp_path))
    png = screenshot(report, tmp_path / "report.png", width=1280, height=2000)
    pixels = np.asarray(Image.open(png).convert("RGB"))
    assert pixels.shape == (2000, 1280, 3)
    colours, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
    assert len(colours) > 1000  # text, gradient header, heat-map cells and charts, not a blank or error page
    assert counts.max() / counts.sum() < 0.7  # no single colour (a blank page) dominates
    header = pixels[10:60, 10:600].reshape(-1, 3).mean(axis=0)
    assert header[2] > header[0] + 30 and header.mean() < 120  # the inline CSS styled the dark-blue header
    lower_half = pixels[1000:]
    assert len(np.unique(lower_half.reshape(-1, 3), axis=0)) > 200  # content continues down the page


def test_screenshot_without_chromium_says_how_to_install(monkeypatch, tmp_path):
    from pintopic.errors import PintopicError
    from pintopic.report import screenshot as module

    monkeypatch.setattr(module, "find_chromium", lambda: None)
    with pytest.raises(PintopicError, match="chromium"):
        module.screenshot(tmp_path / "report.html", tmp_path / "report.png")


@pytest.mark.timeout(240)
def test_cli_report_saves_a_screenshot_of_the_top(chromium, tmp_path, capsys):
    from PIL import Image

    from pintopic.cli import main

    run = make_fake_run(tmp_path)
    png = tmp_path / "docs" / "report-top.png"
    assert main(["report", str(run), "--screenshot", str(png), "--screenshot-height", "700"]) == 0
    assert f"screenshot: {png}" in capsys.readouterr().out
    with Image.open(png) as image:
        assert image.size == (1280, 700)
