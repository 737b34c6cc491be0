"""HTTP for the collector: error classes, retries with backoff and jitter (tenacity), size-limited reads, the API client.

Every request that fails for a reason that may pass (HTTP 429, 5xx, a timeout, a dropped connection, a
garbled JSON page) is retried with exponential backoff and full jitter; ``Retry-After`` is honoured when
the server sends it. 401/403 raise :class:`AuthError` at once (the caller stops that user), 404
:class:`NotFoundError`. The bearer token lives only in the API client's headers: it is never part of a
message, a log line or an exception.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from pintopic import __version__

log = logging.getLogger("pintopic.collect")

USER_AGENT = f"pintopic/{__version__} (research collector; consenting users only)"
#: Largest API response read (a page of 250 pins is about 0.5 MB).
MAX_API_BYTES = 16 * 1024 * 1024

T = TypeVar("T")


class FetchError(Exception):
    """A request that failed for good; ``reason`` is one line for collect.json and the pin log."""

    def __init__(self, reason: str, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class TransientError(FetchError):
    """A failure worth retrying (429, 5xx, timeouts, dropped connections, garbled pages)."""

    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason, status)
        self.retry_after = retry_after


class AuthError(FetchError):
    """401/403: the token is expired, revoked or lacks a scope; the user's collection stops."""


class NotFoundError(FetchError):
    """404: the board or section is gone (deleted, or made secret, during the collection)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry: ``attempts`` tries in all, backoff from ``initial`` doubling up to ``maximum`` seconds,
    plus up to ``jitter`` seconds at random; a ``Retry-After`` longer than ``max_retry_after`` gives up instead."""

    attempts: int = 6
    initial: float = 1.0
    maximum: float = 60.0
    jitter: float = 1.0
    max_retry_after: float = 900.0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time()) if when is not None else None


def status_error(status: int, what: str, retry_after: str | None = None) -> FetchError:
    """The error for a non-2xx status: transient for 429 and 5xx, auth for 401/403, not-found for 404."""
    if status == 429:
        return TransientError(f"HTTP 429 (rate limited) on {what}", status, parse_retry_after(retry_after))
    if status >= 500:
        return TransientError(f"HTTP {status} on {what}", status, parse_retry_after(retry_after))
    if status in (401, 403):
        return AuthError(f"HTTP {status} on {what}: the token was refused (expired, revoked or missing a scope)", status)
    if status == 404:
        return NotFoundError(f"HTTP 404 on {what}: not found", status)
    return FetchError(f"HTTP {status} on {what}", status)


def transport_error(error: Exception, what: str) -> TransientError:
    """A timeout or a connection-level failure from httpx, as a retryable error."""
    import httpx

    if isinstance(error, httpx.TimeoutException):
        return TransientError(f"timed out on {what}")
    return TransientError(f"connection error on {what} ({type(error).__name__})")


async def read_limited(response, max_bytes: int, what: str) -> bytes:
    """The body of a streamed httpx response, refused once it passes ``max_bytes`` (declared or actual)."""
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(f"{what} is {int(declared):,} bytes, over the limit of {max_bytes:,}")
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(f"{what} passed the limit of {max_bytes:,} bytes; refused")
        chunks.append(chunk)
    return b"".join(chunks)


class _RetryAfterOrBackoff:
    """tenacity wait: the server's ``Retry-After`` when it gave one, else exponential backoff with jitter."""

    def __init__(self, policy: RetryPolicy):
        import tenacity

        self.backoff = tenacity.wait_exponential_jitter(multiplier=policy.initial, max=policy.maximum, jitter=policy.jitter)

    def __call__(self, retry_state) -> float:
        after = getattr(retry_state.outcome.exception(), "retry_after", None)
        return after if after is not None else self.backoff(retry_state)


async def with_retries(policy: RetryPolicy, counts: Counter, key: str, call: Callable[[], Awaitable[T]]) -> T:
    """``await call()``, retried on :class:`TransientError` under ``policy``; counts retries under ``key``.

    The last error is raised as a plain :class:`FetchError` saying how many attempts were made.
    """
    import tenacity

    def before_sleep(retry_state) -> None:
        counts[f"{key}.retries"] += 1
        error = retry_state.outcome.exception()
        log.info("retrying after %s (attempt %d of %d)", error, retry_state.attempt_number, policy.attempts)

    def check(error: BaseException) -> bool:
        after = getattr(error, "retry_after", None)
        return isinstance(error, TransientError) and (after is None or after <= policy.max_retry_after)

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(policy.attempts), wait=_RetryAfterOrBackoff(policy),
        retry=tenacity.retry_if_exception(check), before_sleep=before_sleep, reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await call()
    except TransientError as error:
        if error.retry_after is not None and error.retry_after > policy.max_retry_after:
            raise FetchError(f"{error.reason}; Retry-After {error.retry_after:.0f} s is longer than "
                             f"{policy.max_retry_after:.0f} s: rerun later", error.status) from None
        raise FetchError(f"{error.reason} (gave up after {policy.attempts} attempts)", error.status) from None
    raise AssertionError("unreachable: tenacity either returns or raises")


class ApiClient:
    """GET JSON from the API v5 for one user's token: bearer auth, a shared rate limit, retries, a size limit.

    ``counts`` (shared with the rest of the collection) gets one entry per request made, keyed ``api.<kind>``.
    """

    def __init__(self, base_url: str, token: str, *, limiter, policy: RetryPolicy, counts: Counter,
                 timeout: float = 30.0, max_bytes: int = MAX_API_BYTES):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.policy = policy
        self.counts = counts
        self.max_bytes = max_bytes
        self.http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json", "User-Agent": USER_AGENT},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)), follow_redirects=False,
        )

    async def get_json(self, path: str, params: dict, kind: str) -> dict:
        """The JSON object at ``base_url + path``; raises :class:`FetchError` (or a subclass) when it cannot."""
        return await with_retries(self.policy, self.counts, "api", lambda: self._get_once(path, params, kind))

    async def _get_once(self, path: str, params: dict, kind: str) -> dict:
        import json

        import httpx

        what = f"GET {path}"
        async with self.limiter:
            self.counts[f"api.{kind}"] += 1
            try:
                async with self.http.stream("GET", self.base_url + path, params=params) as response:
                    if response.status_code != 200:
                        raise status_error(response.status_code, what, response.headers.get("retry-after"))
                    body = await read_limited(response, self.max_bytes, f"the response to {what}")
            except httpx.HTTPError as error:
                raise transport_error(error, what) from None
        try:
            data = json.loads(body)
        except ValueError:
            raise TransientError(f"{what} returned a page that is not valid JSON (cut short?)") from None
        if not isinstance(data, dict):
            raise TransientError(f"{what} returned JSON that is not an object")
        return data

    async def aclose(self) -> None:
        await self.http.aclose()
