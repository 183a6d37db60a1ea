"""lab: a cross-architecture QEMU test lab measuring page-fault baselines.

The Python API mirrors the command line (see :mod:`lab.api`)::

    import lab
    from lab.config import load

    result = lab.run(load("lab.yaml"), lab.RunRequest(arch="all"))

The API's names are loaded on first use, so ``import lab.errors`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from lab.version import __version__ as __version__

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
