"""One line of ``lab doctor``: a check's name, status and what to do. A value every layer can produce."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | FAIL
    detail: str
    remedy: str = ""
