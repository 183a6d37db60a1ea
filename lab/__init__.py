"""lab: a cross-architecture QEMU test lab measuring page-fault baselines.

The Python API mirrors the command line (see :mod:`lab.api`)::

    import lab
    from lab.config import load

    result = lab.run(load("lab.yaml"), lab.RunRequest(arch="all"))

The API's names are loaded on first use, so ``import lab.errors`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = (
    "CompareRequest",
    "NightlyRequest",
    "RunRequest",
    "compare",
    "doctor",
    "history",
    "nightly",
    "plan",
    "probe",
    "run",
)


def __getattr__(name: str) -> Any:
    if name in _API:
        from lab import api

        return getattr(api, name)
    raise AttributeError(f"module 'lab' has no attribute {name!r}")
