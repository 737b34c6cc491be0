"""Package ``__init__`` files re-export their public names lazily, so importing a package stays cheap (no torch,
no pandas) until a name is used."""
from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """``(__getattr__, __all__)`` for a package that re-exports ``{name: module}`` on first use."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(exports)
