"""``lab compare`` and ``lab nightly``: verdicts against a baseline or another run, as a table, JSON or JUnit XML."""

from __future__ import annotations

import json
import shutil
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from lab import baselines, verdict
from lab.config import Config
from lab.store import Store
from lab.util import text_table, write_atomic
from lab.verdict import Finding, Tolerance


@dataclass(frozen=True)
class Comparison:
    label: str  # "baseline NAME (run X) -> run Y" or "run A -> run B"
    baseline_ref: str
    run_id: str
    findings: list[Finding]

    @property
    def exit_code(self) -> int:
        return verdict.exit_code(self.findings)

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
    return f"{c.label}\n{counts}\n\n{body}\n"


def to_json(c: Comparison) -> str:
    return json.dumps({"label": c.label, "baseline": c.baseline_ref, "run": c.run_id, "counts": c.counts(), "exit_code": c.exit_code,
                       "findings": [asdict(f) for f in c.findings]}, indent=2) + "\n"  # fmt: skip


def to_junit(c: Comparison) -> str:
    """One testcase per cell x stage; regressions fail, missing cells error, incomparable ones are skipped."""
    cases: dict[tuple[str, str], list[Finding]] = {}
    for f in c.findings:
        cases.setdefault((f.cell, f.stage), []).append(f)
    suite = ET.Element("testsuite", name=f"lab compare: {c.label}", timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"))
    failures = errors = skipped = 0
    for (cell, stage), fs in sorted(cases.items()):
        case = ET.SubElement(suite, "testcase", classname=cell.replace("/", "."), name=stage if stage != "*" else "cell", time="0")
        regressed = [f for f in fs if f.verdict == "regressed"]
        if regressed:
            failures += 1
            msg = "; ".join(f"{cell} {stage} regressed: {f.describe()}" for f in regressed)
            ET.SubElement(case, "failure", type="regressed", message=msg).text = msg
        elif any(f.verdict == "missing" for f in fs):
            errors += 1
            msg = f"{cell} {stage} missing: " + "; ".join(f.detail for f in fs if f.verdict == "missing")
            ET.SubElement(case, "error", type="missing", message=msg).text = msg
        elif any(f.verdict == "incomparable" for f in fs):
            skipped += 1
            ET.SubElement(case, "skipped", message=f"{cell} incomparable: " + "; ".join(f.detail for f in fs))
        else:
            ET.SubElement(case, "system-out").text = "; ".join(f"{f.counter} {f.verdict}: {f.describe()}" for f in fs)
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    root = ET.Element("testsuites", name="lab", tests=str(len(cases)), failures=str(failures), errors=str(errors))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def prune_runs(store: Store, runs_dir: Path, keep: int) -> list[Path]:
    """Delete run directories beyond the newest ``keep``, never one a baseline references. Store rows stay."""
    protected = {source for _, _, source in store.baselines()}
    dirs = sorted((d for d in runs_dir.iterdir() if d.is_dir()), key=lambda d: d.name) if runs_dir.exists() else []
    doomed = [d for d in dirs[: max(0, len(dirs) - keep)] if d.name not in protected]
    for d in doomed:
        shutil.rmtree(d)
    return doomed


def write_nightly(out_dir: Path, c: Comparison, report_html: str, report_md: str) -> list[Path]:
    files = {
        "report.html": report_html,
        "report.md": report_md,
        "junit.xml": to_junit(c),
        "compare.json": to_json(c),
        "compare.txt": table(c),
    }
    for name, text in files.items():
        write_atomic(out_dir / name, text)
    return [out_dir / n for n in files]
