"""The images a ``predict`` call is about: files as given, folders replaced by the image files below them.

Folders are walked exactly as ingest walks a collection (:func:`pintopic.dataset.layouts.list_image_files`:
no recursion limit, hidden files skipped, each real folder once, the same image suffixes), and a symlink
leading out of the folder is answered ``outside_root`` without being opened.
"""
from __future__ import annotations

import os
import sys
from typing import NamedTuple

from pintopic.errors import PintopicError


class InputImage(NamedTuple):
    """One image to answer for: its path, and the reason it is not opened (``status: detail``), if any."""

    path: str
    error: str | None = None


def find_images(inputs) -> list[InputImage]:
    """Files as given; folders replaced by their image files (sorted); raises when there is no image at all."""
    from pintopic.dataset.layouts import IMAGE_SUFFIXES, display, list_image_files

    found: list[InputImage] = []
    for item in inputs:
        path = os.fspath(item)
        if not os.path.isdir(path):
            found.append(InputImage(os.fsdecode(path)))
            continue
        entries = list_image_files(path)
        if not entries:
            print(f"warning: no images found in {display(os.fsencode(path))}", file=sys.stderr)
        found += [InputImage(os.fsdecode(entry.abspath), f"{entry.status}: {entry.detail}" if entry.status else None)
                  for entry in entries]
    if not found:
        suffixes = ", ".join(suffix.decode() for suffix in IMAGE_SUFFIXES)
        raise PintopicError(f"no images found in {', '.join(os.fsdecode(os.fspath(i)) for i in inputs) or 'the input'} "
                            f"(image files end in {suffixes})")
    return found


def expand_inputs(inputs) -> list[str]:
    """The paths of :func:`find_images`."""
    return [image.path for image in find_images(inputs)]
