"""One run's cells compared across the values of one axis: do the counts depend on it?

For ``--axis qemu=host,trixie-backports`` this is the proof that the numbers
belong to the guest, not to the emulator build: every cell is paired with the
cell that differs from it in that axis alone, and each stage agrees when it
is exact (equal medians, minor and major) — ``entry`` may move within its
run-to-run range (the ranges overlap), as it does between repeats of one cell.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass

from lab import axes as axes_mod
from lab.results.rows import Cell, Sample
from lab.text import size_text, text_table

RANGED = ("entry",)  # stages whose count moves run to run (the loader's startup): ranges overlapping is agreement


@dataclass(frozen=True)
class Agreement:
    arch: str
    variant: str
    buffer_size: int
    axes: str  # the other axes' values (identity without the compared axis)
    stage: str
    counter: str  # minflt | majflt
    value: str  # the compared axis's value (against the run's default value)
    median: float
    default_median: float
    low: int
    high: int
    default_low: int
    default_high: int
    agree: bool


def _split(identity: str, axis: str) -> tuple[str, str | None]:
    parts = [p for p in identity.split(",") if p]
    mine = [p.partition("=")[2] for p in parts if p.startswith(axis + "=")]
    return ",".join(p for p in parts if not p.startswith(axis + "=")), (mine[0] if mine else None)


def _base(axis: axes_mod.Axis, values: list[str]) -> str:
    """The value the others are compared against: the table's default where the run has it, else the first value
    in table order (free-form values: the first in sort order)."""
    if axis.default in values:
        return axis.default
    order = {v: i for i, v in enumerate(axis.values)}
    return min(values, key=lambda v: (order.get(v, len(order)), v))


def across(cells: list[tuple[Cell, list[Sample]]], axis: str) -> list[Agreement]:
    """Every (cell, stage, counter) of each ``axis`` value against the cell that differs from it in that axis alone,
    valued at the table's default (or the run's first value: :func:`_base`)."""
    row = axes_mod.get(axis)
    by: dict[tuple[str, str, int, str], dict[str, list[Sample]]] = {}
    for cell, samples in cells:
        rest, value = _split(cell.axes, axis)
        if value is not None:
            by.setdefault((cell.arch, cell.variant, cell.buffer_size, rest), {})[value] = samples
    out = []
    for (arch, variant, size, rest), valued in sorted(by.items()):
        if len(valued) < 2:
            continue
        base_value = _base(row, list(valued))
        base = valued[base_value]
        for value, samples in sorted(valued.items()):
            if value == base_value:
                continue
            for stage in dict.fromkeys(s.stage for s in samples):
                for counter in ("minflt", "majflt"):
                    mine = [getattr(s, "delta_" + counter) for s in samples if s.stage == stage]
                    theirs = [getattr(s, "delta_" + counter) for s in base if s.stage == stage]
                    if not mine or not theirs:
                        continue
                    m, t = statistics.median(mine), statistics.median(theirs)
                    overlap = min(mine) <= max(theirs) and min(theirs) <= max(mine)
                    agree = overlap if stage in RANGED else m == t
                    out.append(
                        Agreement(
                            arch, variant, size, rest, stage, counter, value, m, t, min(mine), max(mine), min(theirs), max(theirs), agree
                        )
                    )
    return out


def to_text(rows: list[Agreement], axis: str, every: bool = False) -> str:
    if not rows:
        return f"no cells of this run differ in {axis} alone (run with --axis {axis}=A,B)"
    shown = [r for r in rows if every or not r.agree or r.stage in RANGED]
    table = [
        (r.arch, r.variant, size_text(r.buffer_size), axes_mod.shown(r.axes) or "-", r.stage, r.counter, f"{axis}={r.value}",
         f"{r.median:g} [{r.low}-{r.high}]", f"{r.default_median:g} [{r.default_low}-{r.default_high}]", "agree" if r.agree else "DIFFER")
        for r in shown
    ]  # fmt: skip
    differ = sum(not r.agree for r in rows)
    head = ("arch", "variant", "buffer", "axes", "stage", "counter", "value", "median [range]", "default's", "")
    verdict = f"{len(rows) - differ} of {len(rows)} stage counts agree across {axis}" + (f"; {differ} DIFFER" if differ else "")
    return text_table(table, head) + "\n" + verdict + ("" if every else " (exact agreements of other stages not listed; --all)") + "\n"


def to_json(rows: list[Agreement], axis: str) -> str:
    return json.dumps({"axis": axis, "agree": all(r.agree for r in rows) and bool(rows), "rows": [asdict(r) for r in rows]}, indent=2)


@dataclass(frozen=True)
class CellAgreement:
    """One cell against its default-valued twin: agreed in every stage, or which stages differ."""

    arch: str
    variant: str
    buffer_size: int
    axes: str
    value: str
    differ: tuple[str, ...]  # "stage counter" that differ; () when every count agrees


def per_cell(rows: list[Agreement]) -> list[CellAgreement]:
    out: dict[tuple[str, str, int, str, str], list[str]] = {}
    for r in rows:
        out.setdefault((r.arch, r.variant, r.buffer_size, r.axes, r.value), [])
        if not r.agree:
            out[(r.arch, r.variant, r.buffer_size, r.axes, r.value)].append(f"{r.stage} {r.counter}")
    return [CellAgreement(*key, tuple(differ)) for key, differ in out.items()]
