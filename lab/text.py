"""Text in and out: byte sizes (``1M``) and plain-text tables."""

from __future__ import annotations

import re
from collections.abc import Sequence

_SIZE = re.compile(r"^(\d+)([KMG]?)(i?B)?$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``4096``, ``64K``, ``1M``, ``1MiB`` → bytes (powers of 1024); ValueError otherwise."""
    m = _SIZE.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"bad size {text!r}: use bytes or a K/M/G suffix, e.g. 1M")
    return int(m.group(1)) << (10 * " KMG".index(m.group(2).upper() or " "))


def size_text(n: int) -> str:
    """The inverse of :func:`parse_size` for whole units: 1048576 → ``1M``."""
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def text_table(rows: Sequence[Sequence[object]], header: Sequence[str], right_from: int | None = None) -> str:
    """Columns padded to their widest cell; columns from index ``right_from`` on are right-aligned (numbers)."""
    cells = [[str(c) for c in header], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    right = len(header) if right_from is None else right_from
    return "\n".join(
        "  ".join(c.rjust(w) if i >= right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip() for r in cells
    )
