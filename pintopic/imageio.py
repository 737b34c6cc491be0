"""Opening images the same way in every stage: verify, orient, flatten to RGB, or say why not.

Ingest, extraction, prediction and the report all decode through :func:`load_rgb`, so an image that
ingest called ``ok`` is decoded identically later, and a bad one gets one of the statuses below.

The pixel limit is checked from the header, before any pixel buffer is allocated, so a 600-megapixel
PNG costs a few hundred bytes of reading, not gigabytes of memory.
"""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import BinaryIO

#: Pillow's own decompression-bomb limit, the default for ``too_large``.
DEFAULT_MAX_PIXELS = 89_478_485

#: Every status a file can get; only ``ok`` rows are used downstream.
STATUSES = (
    "ok", "empty", "truncated", "not_an_image", "unsupported", "too_large", "outside_root",
    "missing_image", "bad_metadata", "no_category", "excluded_category", "duplicate", "conflict",
)

#: Raster formats identified by their magic bytes. Formats without a reliable signature (TGA, PCX)
#: are only tried when the file name says so, so random bytes are never "identified" as an image.
_SIGNED_FORMATS = (
    "JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP", "DIB", "TIFF", "ICO", "ICNS", "PPM", "JPEG2000",
    "PSD", "QOI", "SGI", "DDS", "XPM",
)
_FORMATS_BY_SUFFIX = {".tga": "TGA", ".icb": "TGA", ".vda": "TGA", ".vst": "TGA", ".pcx": "PCX"}

#: ``Image.MAX_IMAGE_PIXELS`` is process-global; it is lifted only around ``Image.open`` (which reads
#: the header) and only under this lock, so threads (the HTTP server) never see each other's value.
_OPEN_LOCK = threading.Lock()


class ImageError(Exception):
    """A file that cannot be used as an image; ``status`` is one of :data:`STATUSES`.

    ``size`` is the (width, height) the header declared, when it was read (e.g. for ``too_large``).
    """

    def __init__(self, status: str, detail: str, size: tuple[int, int] | None = None):
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.size = size


def _looks_like_svg(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return text.startswith(b"<svg") or (text.startswith((b"<?xml", b"<!--", b"<!doctype svg")) and b"<svg" in text)


def _unsupported_kind(head: bytes, suffix: str) -> str | None:
    """A name for files that are images (or documents) in a format pintopic does not decode."""
    if _looks_like_svg(head) or suffix in (".svg", ".svgz"):
        return "SVG (vector) images are not decoded"
    if head.startswith(b"%PDF"):
        return "a PDF document, not decoded"
    if head.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):
        return "PostScript/EPS is not decoded"
    return None


def _unidentified(head: bytes, stream: BinaryIO) -> ImageError:
    """The error for a file no decoder accepted: a damaged file of a known format, an undecodable format, or not an image."""
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
        return ImageError("unsupported", "HEIF/HEIC images are not decoded (convert them to JPEG or PNG)")
    known = next((name for name, magic in _SIGNATURES if head.startswith(magic)), None)
    if known == "WEBP" and head[8:12] != b"WEBP":
        known = None
    if known is not None:
        return ImageError("truncated", f"a damaged {known} file: {_header_problem(known, head, stream)}")
    return ImageError("not_an_image", _not_an_image_detail(head))


#: Magic bytes of the common formats: a file that starts like one but does not open is damaged, not "not an image".
_SIGNATURES = (("PNG", b"\x89PNG\r\n\x1a\n"), ("JPEG", b"\xff\xd8\xff"), ("GIF", b"GIF87a"), ("GIF", b"GIF89a"),
               ("WEBP", b"RIFF"), ("BMP", b"BM"), ("TIFF", b"II*\x00"), ("TIFF", b"MM\x00*"))


def _header_problem(fmt: str, head: bytes, stream: BinaryIO) -> str:
    """Why that format's own decoder refused the header (bad checksum, 0x0 size ...), in its words."""
    import struct

    from PIL import Image

    from pintopic.safeio import one_line

    if fmt == "PNG" and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        if width < 1 or height < 1:
            return f"invalid size {width}x{height}"
    factory = Image.OPEN.get(fmt, (None,))[0]
    if factory is None:
        return "its header cannot be read"
    try:
        stream.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            factory(stream, "")
        return "its header cannot be read"
    except Exception as error:  # noqa: BLE001 - decoders raise many types; each only names the damage
        text = one_line(error)
        if "not identified by this driver" in text or not text:
            return "invalid header (size or mode)"
        return text


def _not_an_image_detail(head: bytes) -> str:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page, not an image"
    if text.startswith((b"{", b"[")):
        return "JSON text, not an image"
    return "no image format recognised"


def status_of(error) -> ImageError:
    """The image status of a file :func:`pintopic.safeio.open_regular` refused (one rule for every stage):
    missing or a symlink loop -> ``missing_image``; a pipe, device, socket or folder -> ``not_an_image``."""
    status = {"missing": "missing_image", "loop": "missing_image", "not_regular": "not_an_image",
              "too_large": "too_large"}.get(error.kind, "truncated")
    return ImageError(status, error.reason)


def load_rgb(path: str | os.PathLike | bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS, draft_size: int | None = None):
    """Decode ``path`` fully into an RGB :class:`PIL.Image.Image`.

    EXIF orientation is applied, transparency is composited on white, palette/CMYK/16-bit/grey
    become 8-bit RGB, animations give their first frame. ``draft_size`` lets JPEG decode at a
    reduced scale (1/2, 1/4 or 1/8, dividing both sides exactly) that still covers ``draft_size``
    pixels on both sides. Only a regular file is opened (a pipe or device would block or never end).
    Raises :class:`ImageError`.
    """
    from pintopic.safeio import UnreadableFileError, open_regular

    name = os.fsdecode(path) if isinstance(path, bytes) else str(path)
    try:
        handle = open_regular(path)
    except UnreadableFileError as error:
        raise status_of(error) from None
    with handle:
        return load_rgb_from(handle, name=name, max_pixels=max_pixels, draft_size=draft_size)


def load_rgb_from(stream: BinaryIO, *, name: str = "", max_pixels: int | None = DEFAULT_MAX_PIXELS,
                  draft_size: int | None = None):
    """:func:`load_rgb` for an open binary stream (``name`` only helps recognise the format)."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    suffix = Path(name).suffix.lower()
    try:
        head = stream.read(512)
        if not head:
            raise ImageError("empty", "file has 0 bytes")
        unsupported = _unsupported_kind(head, suffix)
        if unsupported:
            raise ImageError("unsupported", unsupported)
        stream.seek(0)
        formats = _SIGNED_FORMATS + ((_FORMATS_BY_SUFFIX[suffix],) if suffix in _FORMATS_BY_SUFFIX else ())
        try:
            with _OPEN_LOCK, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                previous_limit = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = None  # checked below from the header, before any pixel is allocated
                try:
                    image = Image.open(stream, formats=formats)
                finally:
                    Image.MAX_IMAGE_PIXELS = previous_limit
        except UnidentifiedImageError:
            raise _unidentified(head, stream) from None
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageError("too_large", f"{width}x{height} = {width * height:,} pixels > {max_pixels:,}", (width, height))
        if width < 1 or height < 1:
            raise ImageError("truncated", f"invalid size {width}x{height}", (width, height))
        if draft_size and image.format == "JPEG":
            scale = draft_scale(width, height, draft_size)
            if scale > 1:
                image.draft("RGB", (width // scale, height // scale))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image.load()
        except OSError as error:
            text = str(error)
            if "decoder" in text and "not available" in text:
                raise ImageError("unsupported", f"{image.format}: {text}", (width, height)) from None
            raise ImageError("truncated", f"decoding failed: {text}", (width, height)) from None
        except (SyntaxError, ValueError, EOFError, IndexError, TypeError) as error:
            raise ImageError("truncated", f"decoding failed: {error}", (width, height)) from None
        return to_rgb(_apply_orientation(image))
    except ImageError:
        raise
    except MemoryError:
        raise ImageError("too_large", "not enough memory to decode") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as error:
        raise ImageError("truncated", f"decoding failed: {error}") from None


def draft_scale(width: int, height: int, draft_size: int) -> int:
    """The JPEG draft reduction :func:`load_rgb` uses for a stored size: 8, 4, 2 or 1 (none).

    Only scales that divide both sides exactly: a rounded-up size shifts the geometry by up to half
    a pixel, which costs more than 1/255 mean error after resizing on detailed photos.
    """
    return next((s for s in (8, 4, 2) if width % s == 0 and height % s == 0 and min(width, height) // s >= draft_size), 1)


def _apply_orientation(image):
    """Rotate/flip by the EXIF orientation tag; a damaged EXIF block leaves the pixels as stored."""
    from PIL import Image

    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # EXIF parsing raises many types on damaged blocks; the pixels are still fine
        return image
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    return image.transpose(method) if method is not None else image


def to_rgb(image):
    """8-bit RGB with transparency composited on white (the study's pins have white backgrounds)."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode.startswith(("I", "F")):
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.size and array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype("uint8"), "L")
    if image.mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    if image.mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")

