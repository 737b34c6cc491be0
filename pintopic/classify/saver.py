"""How one estimator class is saved without pickle: its JSON parameters, its fitted arrays, how to restore it.

Each classifier module declares ``SAVERS = {class name: Saver}`` for the classes its catalog entry lists;
:mod:`pintopic.classify.persist` finds them through the catalog, which makes them an allow-list.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Saver:
    """``cls(**params)`` builds an unfitted instance; ``arrays(fitted)`` -> {name: array}; ``restore(instance, arrays)``
    returns it fitted. ``list_params`` are JSON lists to turn back into tuples."""

    cls: Callable[..., Any]
    params: tuple[str, ...]
    arrays: Callable[[Any], dict]
    restore: Callable[[Any, dict], Any]
    list_params: tuple[str, ...] = ()
