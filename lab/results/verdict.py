"""Regression verdicts on fault-count distributions. Pure: no I/O.

The rule, per cell, stage and counter (minor, major), on integer counts: a
change only when the two ranges do not overlap **and are not adjacent**
(``[54, 54]`` against ``[55, 55]`` is noise of one fault), **and** the
difference of medians exceeds the stage's tolerance in absolute faults and in
percent of the baseline median. Cells pair only when their environment matches;
otherwise they are *incomparable*, naming the fields that differ.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from lab import axes as axes_mod

ENV_FIELDS = (
    "libc",
    "libc_version_build",
    "libc_version_run",
    "linkage",
    "toolchain",
    "flags",
    "kernel_release",
    "page_size",
    "thp",
    "qemu_version",
    "accel",
    "probe_schema",
    "host_cpu",
)
# Recorded since store v5 (KVM cells: the host's CPU): a baseline saved before that has none, which is not a change.
# The host's name is recorded with every cell but is not compared: a TCG guest counts the same on any host, and
# containers get a new hostname every run.
OPTIONAL_ENV = ("host_cpu",)
COUNTERS = ("minflt", "majflt")
ORDER = ("regressed", "missing", "incomparable", "improved", "new", "unchanged")  # worst first


@dataclass(frozen=True)
class Tolerance:
    faults: float  # the medians must differ by more than this many faults
    percent: float  # ... and by more than this percentage of the baseline median


def cell_name(arch: str, variant: str, buffer_size: int, axes: str) -> str:
    """A cell as comparisons name it: arch/variant/size[/the identity's values that are not the table's defaults]."""
    shown = axes_mod.shown(axes)
    return f"{arch}/{variant}/{buffer_size}" + (f"/{shown}" if shown else "")


@dataclass(frozen=True)
class CellData:
    """One cell's identity, environment and per-stage distributions (delta counts over repeats)."""

    arch: str
    variant: str
    buffer_size: int
    env: Mapping[str, object]
    stages: Mapping[str, Mapping[str, list[int]]]  # stage -> counter -> values
    axes: str = ""  # every axis's value (lab.axes.identity): part of the identity

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.arch, self.variant, self.buffer_size, self.axes)

    @property
    def name(self) -> str:
        return cell_name(self.arch, self.variant, self.buffer_size, self.axes)


@dataclass(frozen=True)
class Finding:
    cell: str  # arch/variant/buffer_size[/axes]
    stage: str  # "*" for whole-cell verdicts
    counter: str  # minflt | majflt | "*"
    verdict: str
    base_median: float | None = None
    base_range: tuple[int, int] | None = None
    cur_median: float | None = None
    cur_range: tuple[int, int] | None = None
    detail: str = ""

    @property
    def delta(self) -> float | None:
        if self.base_median is None or self.cur_median is None:
            return None
        return self.cur_median - self.base_median

    def describe(self) -> str:
        if self.base_median is None or self.cur_median is None or self.base_range is None or self.cur_range is None:
            return self.detail
        b, c = self.base_range, self.cur_range
        return (
            f"{self.counter} median {self.base_median:g} -> {self.cur_median:g} ({self.delta:+g}); "
            f"baseline range {b[0]}-{b[1]}, current {c[0]}-{c[1]}" + (f"; {self.detail}" if self.detail else "")
        )


def stage_verdict(base: list[int], cur: list[int], tol: Tolerance) -> tuple[str, str]:
    """unchanged | improved | regressed for two distributions of one counter, with the reason."""
    if not base or not cur:
        raise ValueError("empty distribution")
    bmin, bmax, cmin, cmax = min(base), max(base), min(cur), max(cur)
    bmed, cmed = statistics.median(base), statistics.median(cur)
    gap = cmin - bmax if cmin > bmax else bmin - cmax if bmin > cmax else 0
    if gap <= 1:
        return "unchanged", "ranges overlap" if gap <= 0 else "ranges are adjacent"
    diff = abs(cmed - bmed)
    if diff <= tol.faults:
        return "unchanged", f"median moved {diff:g} <= {tol.faults:g} faults"
    if diff <= tol.percent / 100 * abs(bmed):
        return "unchanged", f"median moved {diff:g} <= {tol.percent:g}% of {bmed:g}"
    return ("regressed" if cmed > bmed else "improved"), ""


def env_differences(base: Mapping[str, object], cur: Mapping[str, object]) -> list[str]:
    return [
        f"{k}: {base.get(k)!r} -> {cur.get(k)!r}"
        for k in ENV_FIELDS
        if base.get(k) != cur.get(k) and not (k in OPTIONAL_ENV and not base.get(k))
    ]


def compare(
    baseline: list[CellData],
    current: list[CellData],
    errored: set[tuple[str, str, int, str]],
    tolerance: Mapping[str, Tolerance],
    default: Tolerance,
) -> list[Finding]:
    """Every finding, worst first. ``errored`` are current cells that failed (they count as missing)."""
    findings: list[Finding] = []
    cur = {c.key: c for c in current}
    for b in baseline:
        c = cur.pop(b.key, None)
        if c is None or b.key in errored:  # an errored cell's partial samples are evidence, not a measurement
            why = "errored in this run" if b.key in errored else "absent from this run"
            findings.append(Finding(b.name, "*", "*", "missing", detail=why))
            continue
        diffs = env_differences(b.env, c.env)
        if diffs:
            findings.append(Finding(b.name, "*", "*", "incomparable", detail="; ".join(diffs)))
            continue
        for stage, counters in b.stages.items():
            for counter in COUNTERS:
                bv, cv = list(counters.get(counter, [])), list(c.stages.get(stage, {}).get(counter, []))
                if not bv or not cv:
                    findings.append(Finding(b.name, stage, counter, "missing", detail="stage absent from this run"))
                    continue
                verdict, why = stage_verdict(bv, cv, tolerance.get(stage, default))
                findings.append(
                    Finding(
                        b.name,
                        stage,
                        counter,
                        verdict,
                        statistics.median(bv),
                        (min(bv), max(bv)),
                        statistics.median(cv),
                        (min(cv), max(cv)),
                        why,
                    )
                )
    for c in cur.values():
        findings.append(Finding(c.name, "*", "*", "new", detail="not in the baseline"))
    return sorted(findings, key=lambda f: (ORDER.index(f.verdict), f.cell, f.stage, f.counter))


def nothing_comparable(findings: list[Finding]) -> str | None:
    """Why nothing was compared, when no stage of any cell could be (every cell incomparable or missing), else None."""
    if any(f.stage != "*" for f in findings):
        return None
    changes: dict[str, None] = {}
    for f in findings:
        if f.verdict == "incomparable":
            changes.update(dict.fromkeys(f.detail.split("; ")))
    if changes:
        return f"nothing comparable: environment changed ({', '.join(changes)}): save a new baseline"
    return "nothing comparable: no cell of the baseline was measured in this run"


def exit_code(findings: list[Finding]) -> int:
    """0 no regression; 1 a regression; 2 missing or errored cells, or nothing comparable (and no regression)."""
    verdicts = {f.verdict for f in findings}
    if "regressed" in verdicts:
        return 1
    if "missing" in verdicts or nothing_comparable(findings):
        return 2
    return 0
