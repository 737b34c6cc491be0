"""A PNG screenshot of a report as headless Chromium renders it (for the README and the rendering test)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pintopic.errors import PintopicError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The path of a Chromium-family browser on PATH (Debian's package installs ``chromium``), or None."""
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def screenshot(html_path: str | os.PathLike, png_path: str | os.PathLike, *, width: int = 1280, height: int = 2000,
               timeout: float = 90.0) -> Path:
    """Render ``html_path`` offline in headless Chromium and save the top ``width`` × ``height`` pixels to ``png_path``."""
    browser = find_chromium()
    if browser is None:
        raise PintopicError("no Chromium found on PATH; install Debian's `chromium` package (`make apt-data`)")
    html_path, png_path = Path(html_path).resolve(), Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.unlink(missing_ok=True)  # so a failed run cannot pass off an old screenshot as new
    with tempfile.TemporaryDirectory(prefix="pintopic-chromium-") as profile:
        command = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
            f"--user-data-dir={profile}", f"--screenshot={png_path}", f"--window-size={width},{height}",
            html_path.as_uri(),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PintopicError(f"Chromium did not finish the screenshot within {timeout:.0f} s") from None
    if done.returncode != 0 or not png_path.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise PintopicError(f"Chromium failed to screenshot {html_path} (exit {done.returncode}): {' | '.join(tail)}")
    return png_path
