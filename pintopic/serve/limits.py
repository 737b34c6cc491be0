"""Reading a prediction request's uploads within limits, before any image is decoded.

The body is counted while it streams in (413 as soon as it passes ``max_upload_bytes``, or at once when the
declared Content-Length does), the multipart parser (Starlette's, on python-multipart) stops at ``max_files``
files, and small form fields only. Decoding checks (pixel limit from the header, truncation, non-images) are
:mod:`pintopic.imageio`'s, as in every stage.
"""
from __future__ import annotations

from collections.abc import AsyncIterator

#: Starlette's message for a request with more file parts than ``max_files`` (checked while parsing).
_TOO_MANY_FILES = "Too many files"


def _rejected(status: int, detail: str):
    from fastapi import HTTPException

    return HTTPException(status_code=status, detail=detail)


async def _counted(chunks: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[bytes]:
    """The body's chunks, stopping with 413 as soon as more than ``max_bytes`` have arrived."""
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > max_bytes:
            raise _rejected(413, f"upload larger than the limit of {max_bytes:,} bytes per request")
        yield chunk


def _check_headers(headers, max_bytes: int) -> None:
    if not headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise _rejected(415, "send the images as multipart/form-data file parts (e.g. curl -F images=@pin.jpg)")
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise _rejected(400, f"invalid Content-Length {declared!r}")
        if int(declared) > max_bytes:
            raise _rejected(413, f"upload of {int(declared):,} bytes is larger than the limit of {max_bytes:,} bytes per request")


async def read_uploads(request, *, max_bytes: int, max_files: int) -> tuple[list, dict[str, str]]:
    """``(files, fields)`` of a multipart request: the file parts in order (Starlette ``UploadFile``s, spooled to
    disk past 1 MB) and the text fields. Raises ``HTTPException`` 413/415/400 with the reason."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser
    from starlette.requests import ClientDisconnect

    _check_headers(request.headers, max_bytes)
    parser = MultiPartParser(request.headers, _counted(request.stream(), max_bytes), max_files=max_files,
                             max_fields=8, max_part_size=1024)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        if error.message.startswith(_TOO_MANY_FILES):
            raise _rejected(413, f"too many files: at most {max_files} images per request") from None
        raise _rejected(400, f"malformed multipart body: {error.message}") from None
    except ClientDisconnect:
        raise _rejected(400, "the client disconnected before the upload was complete") from None
    items = list(form.multi_items())
    files = [value for _, value in items if isinstance(value, UploadFile)]
    fields = {key: value for key, value in items if isinstance(value, str)}
    if not files:
        await form.close()
        raise _rejected(400, "no image in the request: send one or more files as multipart parts (e.g. -F images=@pin.jpg)")
    return files, fields
