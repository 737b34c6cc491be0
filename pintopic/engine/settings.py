"""Which engine runs the heavy stages, and where: ``local`` (this machine's processes) or ``ray`` (a Ray cluster).

The settings come from the CLI (``--engine``, ``--ray-address``) or a config's ``[engine]`` section. They
never change a stage's outputs, so they are not part of any settings hash: a store written on a cluster is
the store a single machine writes.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from pintopic.errors import PintopicError

KINDS = ("local", "ray")

#: ``auto`` (the cluster of RAY_ADDRESS, or the one ``ray start`` left on this machine), ``local`` (a private
#: one-machine Ray for this process), ``HOST:PORT`` (a head node's GCS) or ``ray://HOST:PORT`` (Ray Client).
_ADDRESS = re.compile(r"^(?:(ray)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


@dataclass(frozen=True)
class EngineSettings:
    """``kind`` local|ray; for ray: ``address``, ``actors`` (embedding actors; 0: one per GPU, else one per
    ``actor_threads`` cluster CPUs) and ``actor_threads`` (inference threads of one CPU actor)."""

    kind: str = "local"
    address: str = "auto"
    actors: int = 0
    actor_threads: int = 2

    def __post_init__(self):
        if self.kind not in KINDS:
            raise PintopicError(f"unknown engine {self.kind!r}; use local or ray")
        if self.kind == "ray":
            host_and_port(self.address)
        if int(self.actors) < 0 or int(self.actor_threads) < 1:
            raise PintopicError("engine.actors must be >= 0 and engine.actor_threads >= 1")

    @classmethod
    def from_config(cls, section: dict | None) -> EngineSettings:
        """From a config's ``[engine]`` section (missing keys take the defaults)."""
        section = dict(section or {})
        unknown = sorted(set(section) - {"kind", "address", "actors", "actor_threads"})
        if unknown:
            raise PintopicError(f"unknown config key engine.{unknown[0]}")
        return cls(**section)

    def to_dict(self) -> dict:
        return asdict(self)


def host_and_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a cluster address, None for ``auto`` and ``local``; a malformed one is a clear error."""
    if address in ("auto", "local"):
        return None
    match = _ADDRESS.match(str(address).strip())
    if not match or not 0 < int(match.group(3)) < 65536:
        raise PintopicError(f"bad Ray address {address!r}; use auto, local, HOST:PORT (the head's GCS port, "
                            "6379 by default) or ray://HOST:10001")
    return match.group(2).strip("[]"), int(match.group(3))
