"""The report's view of a run's traced cells (``lab run --explain``): start-up faults stacked by object, and diffs.

Pure apart from :func:`load`. The accounts live in the run directory, apart
from the store (a traced run is never a sample); the report shows, per cell,
the entry stage's faults stacked by the object they landed in, and for the
variant table's one-thing-at-a-time pairs (glibc/musl per linkage,
static/dynamic per libc), where the difference is, object by object and
section by section.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab.explain import account, render
from lab.explain.checks import Check
from lab.payloads import variants

STAGE = "entry"
OBJECT_COLOURS = {
    "exe": "#4e79a7",
    "ld.so": "#f28e2b",
    "libc.so": "#e15759",
    "[stack]": "#76b7b2",
    "[heap]": "#59a14f",
    "[anon]": "#edc948",
    "[vdso]": "#b07aa1",
    "[vvar]": "#ff9da7",
    account.EXEC_SETUP: "#9c755f",
}
OTHER_COLOUR = "#bab0ac"


@dataclass(frozen=True)
class Traced:
    account: account.Account
    checks: tuple[Check, ...]
    arch: str
    variant: str

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


@dataclass(frozen=True)
class PairDiff:
    arch: str
    what: str
    a: Traced
    b: Traced
    rows: tuple[account.DiffRow, ...]


def load(run_dir: Path) -> tuple[list[Traced], list[str], list[str]]:
    """The run's traced cells, the errors of those that could not be traced, and the stored accounts that do
    not parse (one line each: the file and why)."""
    cells, errors, damaged = [], [], []
    for d in render.load_dir(run_dir):
        if "damaged" in d:
            damaged.append(str(d["damaged"]))
            continue
        if "error" in d:
            errors.append(str(d["error"]))
            continue
        acc, checks = render.from_dict(d)
        cells.append(Traced(acc, tuple(checks), str(d.get("arch", acc.cell.split(":")[0])), str(d.get("variant", ""))))
    return cells, errors, damaged


def chart(cells: list[Traced], width: int = 640, bar: int = 16) -> dict[str, object]:
    """Geometry of the entry stage's faults per traced cell, stacked by object."""
    totals = [c.account.total(STAGE) for c in cells]
    top = max(totals, default=1) or 1
    label_w, rows, y = 190, [], 24
    scale = (width - label_w - 60) / top
    seen: dict[str, str] = {}
    for c, total in zip(cells, totals, strict=True):
        by_object: dict[str, int] = {}
        for obj, _, minor, major in c.account.rows(STAGE):
            by_object[obj] = by_object.get(obj, 0) + minor + major
        x, parts = float(label_w), []
        for obj, n in sorted(by_object.items(), key=lambda kv: (-kv[1], kv[0])):
            colour = OBJECT_COLOURS.get(obj, OTHER_COLOUR)
            seen.setdefault(obj if obj in OBJECT_COLOURS else "other", colour)
            parts.append({"x": x, "w": n * scale, "colour": colour, "object": obj, "value": n})
            x += n * scale
        rows.append({"y": y, "label": c.account.cell, "parts": parts, "total": total, "ok": c.ok})
        y += bar + 6
    return {"width": width, "height": y + 4, "label_w": label_w, "bar": bar, "rows": rows, "legend": list(seen.items())}


def pair_diffs(cells: list[Traced]) -> list[PairDiff]:
    """The variant table's comparison pairs, per arch (and buffer size and axes point), where both cells were traced."""
    by_key = {(c.arch, c.account.cell.removeprefix(f"{c.arch}:{c.variant}"), c.variant): c for c in cells}
    out = []
    for arch, rest in dict.fromkeys((k[0], k[1]) for k in by_key):
        for what, a, b in variants.comparison_pairs():
            if (arch, rest, a) in by_key and (arch, rest, b) in by_key:
                ta, tb = by_key[(arch, rest, a)], by_key[(arch, rest, b)]
                rows = tuple(r for r in account.diff(ta.account, tb.account, STAGE) if r.delta)
                out.append(PairDiff(arch + rest, what, ta, tb, rows))
    return out
