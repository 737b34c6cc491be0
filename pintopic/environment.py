"""What this process runs on: usable cores, the machine, and the versions of the libraries that shape results.

Recorded in every stage's outputs (feature stores, fine-tunes, the report) so a number can be traced to
the software and hardware that produced it.
"""
from __future__ import annotations

import os
import platform

#: Libraries whose versions are recorded beside results.
LIBRARIES = ("pintopic", "torch", "torchvision", "timm", "onnxruntime", "onnx", "numpy", "pillow", "scikit-learn",
             "pandas", "pyarrow", "matplotlib", "open_clip_torch", "cleanlab")


#: Set by an engine for the processes it starts with a share of a machine (a Ray actor's inference threads).
CPUS_VARIABLE = "PINTOPIC_CPUS"


def usable_cores() -> int:
    """Cores this process may use (respects affinity masks and container CPU sets, and the share ``PINTOPIC_CPUS``
    an engine gave it)."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        cores = max(1, os.cpu_count() or 1)
    share = os.environ.get(CPUS_VARIABLE, "")
    return min(cores, int(share)) if share.isdigit() and int(share) > 0 else cores


def library_versions(names=LIBRARIES) -> dict[str, str]:
    """Installed versions of ``names`` (libraries that are not installed are left out)."""
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine() -> dict[str, str | int]:
    """OS, Python, processor and core counts of this machine."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count() or 1,
        "cores_usable": usable_cores(),
    }
