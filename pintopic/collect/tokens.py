"""The consenting users' access tokens: one per line of a file, kept out of every message, log and output."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from pintopic.errors import PintopicError

_TOKEN = re.compile(r"^[\x21-\x7e]{8,4096}$")  # printable ASCII, no spaces: what OAuth access tokens look like


@dataclass(frozen=True)
class Token:
    """One user's token; its value never appears in ``repr``/``str``, only the line it came from."""

    line: int
    value: str = field(repr=False)

    def __str__(self) -> str:
        return f"the token on line {self.line}"


def read_tokens(path: str | os.PathLike) -> list[Token]:
    """Tokens from ``path``: one per line, ``Bearer `` prefix allowed, blank lines and ``#`` comments skipped.

    A malformed line is an error naming its line number only, never its content.
    """
    from pintopic.safeio import read_text_file

    text = read_text_file(path, 1024**2, "tokens file")
    tokens = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower().startswith("bearer "):
            line = line[7:].strip()
        if not _TOKEN.match(line):
            raise PintopicError(f"{path}, line {number}: not an access token (one token per line, no spaces)")
        tokens.append(Token(number, line))
    if not tokens:
        raise PintopicError(f"no access token in {path} (one consenting user's token per line)")
    return tokens
