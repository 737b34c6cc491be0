"""Test-image thumbnails for the report: decoded by the shared decoder, shrunk, inlined as JPEG data: URIs."""
from __future__ import annotations

import io
from html import escape

from pintopic.categories import display_name
from pintopic.dataset import image_file
from pintopic.dataset.decode_cache import existing_copy
from pintopic.imageio import ImageError, load_rgb
from pintopic.report.html import data_uri

THUMBNAIL_PIXELS = 128
PER_CATEGORY = 8


def thumbnail_uri(path: str, size: int = THUMBNAIL_PIXELS) -> str:
    """A JPEG data: URI of the image at ``path``, at most ``size`` pixels on its longer side."""
    image = load_rgb(path, draft_size=size)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=82, optimize=True)
    return data_uri(buffer.getvalue(), "image/jpeg")


def choose_thumbnails(images, per_category: int = PER_CATEGORY):
    """Up to ``per_category`` rows per true category, in ``image_id`` order (so reruns pick the same ones).

    ``images`` is a DataFrame with ``image_id``, ``true``, ``abspath`` and optionally ``pred``.
    """
    ordered = images.sort_values(["true", "image_id"], kind="stable")
    return ordered.groupby("true", sort=True).head(per_category)


def thumbnail_grid_html(chosen, verb: str = "predicted", cache_folder=None) -> str:
    """One row per category; each thumbnail captioned with its true and predicted labels, mistakes marked
    (``verb`` names what ``pred`` is, e.g. "suggested" for label issues); ``cache_folder``: see
    :func:`thumbnail_source`."""
    rows = []
    has_predictions = "pred" in chosen.columns
    for category, group in chosen.groupby("true", sort=True):
        cells = []
        for _, row in group.iterrows():
            cells.append(_thumbnail_cell(row, has_predictions, verb, cache_folder))
        n_wrong = int((group["pred"] != group["true"]).sum()) if has_predictions else 0
        tally = f'<span class="muted">{n_wrong} of {len(group)} wrong</span>' if has_predictions else ""
        rows.append(f'<div class="catblock"><div class="cat">{escape(display_name(str(category)))}{tally}</div>'
                    f'<div class="thumbs">{"".join(cells)}</div></div>')
    return f'<div class="thumbgrid">{"".join(rows)}</div>'


def _thumbnail_cell(row, has_predictions: bool, verb: str = "predicted", cache_folder=None) -> str:
    true = str(row["true"])
    image = thumbnail_img_html(row, f"{true} test image", cache_folder)
    if not has_predictions:
        return f'<figure class="thumb"><div>{image}</div><figcaption>{escape(display_name(true))}</figcaption></figure>'
    pred = str(row["pred"])
    if pred == true:
        caption = f"✓ {escape(display_name(pred))}"
        kind = "right"
    else:
        caption = f"✗ {escape(verb)} <b>{escape(display_name(pred))}</b>"
        kind = "wrong"
    return (f'<figure class="thumb {kind}" title="{escape(_tooltip(row))}">{image}'
            f"<figcaption>{caption}</figcaption></figure>")


def thumbnail_source(row, cache_folder=None) -> str:
    """The file a row's thumbnail is made from: the reduced copy ingest kept in its decode cache
    (``cache_folder``) for the row's ``sha256`` when there is one, else the original. A 40-megapixel PNG
    decodes to ~350 MB; its copy to a few MB."""
    copy = existing_copy(cache_folder, row.get("sha256"))
    return str(copy) if copy else image_file(row)


def thumbnail_img_html(row, alt: str, cache_folder=None) -> str:
    """The ``<img>`` of a sample row's thumbnail, or a note saying why it cannot be shown."""
    try:
        return f'<img alt="{escape(alt)}" src="{thumbnail_uri(thumbnail_source(row, cache_folder))}">'
    except ImageError as error:  # moved or damaged since ingest: say so in place of the picture
        return f'<div class="noimg" title="{escape(error.detail)}">cannot show: {escape(error.status)}</div>'


def _tooltip(row) -> str:
    """Hover text: true label, then the model's top categories with their scores when recorded."""
    text = f"true: {row['true']}; predicted: {row['pred']}"
    ranked = []
    for rank in range(1, 10):
        category, score = row.get(f"top{rank}"), row.get(f"score{rank}")
        if category is None:
            break
        ranked.append(f"{category} {score:.2f}" if isinstance(score, float) else str(category))
    return text + (f"; top: {', '.join(ranked)}" if ranked else "")
