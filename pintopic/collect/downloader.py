"""Image downloads: allowed hosts only, one pooled connection set, a byte limit, and a content check.

The caller bounds how many downloads run at once; this client keeps that many connections alive to the
CDN and reuses them. It never sends the API token. An image is accepted only when its bytes decode
fully (:func:`check_image`, through :func:`pintopic.imageio.load_rgb_from`, the decoder every stage uses),
whatever the ``Content-Type`` header claims, so an HTML error page served as ``image/jpeg`` is refused.
"""
from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass

from pintopic.collect.client import (
    USER_AGENT,
    FetchError,
    RetryPolicy,
    read_limited,
    status_error,
    transport_error,
    with_retries,
)
from pintopic.imageio import DEFAULT_MAX_PIXELS, ImageError, load_rgb_from

#: Largest image accepted (Pinterest's 1200x images are well under 2 MB).
MAX_IMAGE_BYTES = 20 * 1024 * 1024
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif", "AVIF": "avif"}


@dataclass
class ImageFile:
    """A downloaded, verified image: its bytes as served, and the extension of its real format."""

    data: bytes
    extension: str


def host_refusal(url: str, allowed: tuple[str, ...]) -> str | None:
    """Why ``url`` may not be fetched (None when it may): its host must be allowed, its scheme https.

    Plain http is accepted only for loopback hosts (the tests' fake CDN). Allowed entries are host names,
    or ``host:port`` to pin a port.
    """
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "the image URL is not a valid URL"
    host = (parsed.host or "").lower()
    with_port = f"{host}:{parsed.port}" if parsed.port else host
    if host not in allowed and with_port not in allowed:
        return f"the image URL's host {host or '(none)'} is not an allowed image host ({', '.join(allowed)})"
    if parsed.scheme != "https" and not (parsed.scheme == "http" and host in _LOOPBACK):
        return f"the image URL uses {parsed.scheme or 'no scheme'}, not https"
    return None


def check_image(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageFile:
    """Decode ``data`` to the last byte; raise :class:`FetchError` saying why it is not a usable image.

    A JPEG is decoded at a reduced DCT scale (every byte of its compressed data is still read, so a cut or
    damaged file fails; a third less CPU at 1200 px).
    """
    from PIL import Image

    try:
        load_rgb_from(io.BytesIO(data), max_pixels=max_pixels, draft_size=64)
    except ImageError as error:
        raise FetchError(f"not an image by content ({error.status}: {error.detail})") from None
    with Image.open(io.BytesIO(data)) as header:
        extension = _EXTENSIONS.get(header.format or "", (header.format or "img").lower())
    return ImageFile(data, extension)


class ImageDownloader:
    """GET images from allowed hosts with retries and a byte limit (check them with :func:`check_image`)."""

    def __init__(self, allowed_hosts, *, connections: int, policy: RetryPolicy, counts: Counter,
                 max_bytes: int = MAX_IMAGE_BYTES, timeout: float = 30.0):
        import httpx

        self.allowed = tuple(host.lower() for host in allowed_hosts)
        self.policy = policy
        self.counts = counts
        self.max_bytes = max_bytes
        self.http = httpx.AsyncClient(
            headers={"User-Agent": USER_AGENT}, follow_redirects=False,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    async def fetch(self, url: str) -> bytes:
        """The bytes at ``url``; :class:`FetchError` says why not (a refused host is never contacted)."""
        refusal = host_refusal(url, self.allowed)
        if refusal:
            raise FetchError(refusal)
        return await with_retries(self.policy, self.counts, "images", lambda: self._get_once(url))

    async def _get_once(self, url: str) -> bytes:
        import httpx

        self.counts["images"] += 1
        try:
            async with self.http.stream("GET", url) as response:
                status = response.status_code
                if status == 429 or status >= 500:
                    raise status_error(status, "the image", response.headers.get("retry-after"))
                if status != 200:  # a 401/403 from the CDN is about this file, not the user's token
                    raise FetchError(f"HTTP {status} on the image", status)
                return await read_limited(response, self.max_bytes, "the image")
        except httpx.HTTPError as error:
            raise transport_error(error, "the image") from None

    async def aclose(self) -> None:
        await self.http.aclose()
