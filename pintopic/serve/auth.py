"""API keys: a file with one key per line (blank lines and ``#`` comments ignored), kept in memory only as SHA-256
digests and compared in constant time. With keys, every ``/v1`` call needs ``Authorization: Bearer <key>``."""
from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from pintopic.errors import PintopicError

#: Shorter keys are refused: a key is a secret, not a password someone types.
MIN_KEY_LENGTH = 16


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class ApiKeys:
    """The accepted keys' digests; :meth:`accepts` compares against every one (no early exit)."""

    def __init__(self, keys):
        self._digests = [_digest(key) for key in keys]

    @classmethod
    def from_file(cls, path: str | Path) -> ApiKeys:
        from pintopic.safeio import read_text_file

        lines = read_text_file(path, 1024**2, "API keys file").splitlines()
        keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not keys:
            raise PintopicError(f"API keys file {path} holds no key (one key per line)")
        short = sum(len(key) < MIN_KEY_LENGTH for key in keys)
        if short:  # the message never shows a key
            raise PintopicError(f"API keys file {path}: {short} key(s) shorter than {MIN_KEY_LENGTH} characters "
                                "(make them with e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
        return cls(keys)

    def __len__(self) -> int:
        return len(self._digests)

    def accepts(self, key: str | None) -> bool:
        if not key:
            return False
        given = _digest(key)
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(given, digest)
        return matched


def bearer_dependency(keys: ApiKeys | None):
    """A FastAPI dependency that answers 401 unless the request carries an accepted bearer key (no-op without keys)."""
    from fastapi import Depends, HTTPException
    from fastapi.security import HTTPBearer

    scheme = HTTPBearer(auto_error=False, description="an API key from the server's --api-keys file")

    async def require_key(credentials=Depends(scheme)) -> None:  # noqa: B008 - FastAPI's way; unannotated, as
        # string annotations would resolve only against module globals
        if keys is None:
            return
        if credentials is None:
            raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not keys.accepts(credentials.credentials):
            raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

    return require_key
