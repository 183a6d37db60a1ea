"""Comparisons: a run against a baseline or another run, as verdicts per cell, stage and counter (table or JSON)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass

from lab.config import Config
from lab.results import baselines, verdict
from lab.results.store import Store
from lab.results.verdict import Finding, Tolerance
from lab.text import text_table


@dataclass(frozen=True)
class Comparison:
    label: str  # "baseline NAME (run X) -> run Y" or "run A -> run B"
    baseline_ref: str
    run_id: str
    findings: list[Finding]

    @property
    def exit_code(self) -> int:
        return verdict.exit_code(self.findings)

    @property
    def nothing_comparable(self) -> str | None:
        """Set when no stage could be compared (e.g. every cell's environment changed): never a silent pass."""
        return verdict.nothing_comparable(self.findings)

    def counts(self) -> dict[str, int]:
        return dict(Counter(f.verdict for f in self.findings))


def tolerance(cfg: Config, faults: float | None = None, percent: float | None = None) -> tuple[Tolerance, dict[str, Tolerance]]:
    """The configured tolerances; command-line values replace every stage's."""
    if faults is not None or percent is not None:
        t = Tolerance(faults if faults is not None else cfg.compare.faults, percent if percent is not None else cfg.compare.percent)
        return t, {}
    default = Tolerance(cfg.compare.faults, cfg.compare.percent)
    return default, {s: Tolerance(v["faults"], v["percent"]) for s, v in cfg.compare.stages.items()}


def against_baseline(store: Store, name: str, run_ref: str | None, tol: tuple[Tolerance, dict[str, Tolerance]]) -> Comparison:
    source, base = baselines.load(store, name)
    run = store.run(run_ref)
    cur, errored = baselines.run_cells(store, run.id)
    return Comparison(f"baseline {name} (run {source}) -> run {run.id}", name, run.id, verdict.compare(base, cur, errored, tol[1], tol[0]))


def between_runs(store: Store, run_a: str, run_b: str, tol: tuple[Tolerance, dict[str, Tolerance]]) -> Comparison:
    a, b = store.run(run_a), store.run(run_b)
    base, _ = baselines.run_cells(store, a.id)
    cur, errored = baselines.run_cells(store, b.id)
    return Comparison(f"run {a.id} -> run {b.id}", a.id, b.id, verdict.compare(base, cur, errored, tol[1], tol[0]))


def table(c: Comparison, show_unchanged: bool = False) -> str:
    rows = [
        (f.verdict.upper() if f.verdict in ("regressed", "missing") else f.verdict, f.cell, f.stage, f.counter, f.describe())
        for f in c.findings
        if show_unchanged or f.verdict != "unchanged"
    ]
    counts = ", ".join(f"{n} {v}" for v, n in sorted(c.counts().items(), key=lambda kv: verdict.ORDER.index(kv[0])))
    body = text_table(rows, ("verdict", "cell", "stage", "counter", "detail")) if rows else "(every compared stage unchanged)"
    warning = f"{c.nothing_comparable}\n" if c.nothing_comparable else ""
    return f"{c.label}\n{counts}\n{warning}\n{body}\n"


def to_json(c: Comparison) -> str:
    return json.dumps({"label": c.label, "baseline": c.baseline_ref, "run": c.run_id, "counts": c.counts(), "exit_code": c.exit_code,
                       "nothing_comparable": c.nothing_comparable,
                       "findings": [asdict(f) for f in c.findings]}, indent=2) + "\n"  # fmt: skip


def from_json(text: str) -> Comparison:
    """A comparison back from :func:`to_json` (a nightly's stored verdict)."""
    d = json.loads(text)
    findings = []
    for f in d["findings"]:
        base, cur = f.pop("base_range"), f.pop("cur_range")
        findings.append(Finding(**f, base_range=tuple(base) if base else None, cur_range=tuple(cur) if cur else None))
    return Comparison(d["label"], d["baseline"], d["run"], findings)
