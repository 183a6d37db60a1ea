"""Every regression explained: a comparison's regressed stages, each with the object × section × function diff
between the baseline run's traced account of the cell and the compared run's (``lab explain --diff`` across runs).

The accounts are the run directories' (``lab run --explain``, the nightly default); a side without one says
why (ran without ``--explain``, its directory pruned, its account failed or does not parse). A nightly stores
its explanations with its verdict (:class:`lab.results.rows.Nightly`), so they outlive run-directory retention.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from lab.errors import UserError
from lab.explain import account, render
from lab.results.compare import Comparison
from lab.results.rows import Cell
from lab.results.store import Store
from lab.results.verdict import cell_name
from lab.text import text_table

TOP = 25  # diff rows kept per regression (worst first); the rest are summed into one line


@dataclass(frozen=True)
class Row:
    object: str
    section: str
    function: str
    a: int  # faults in the baseline run's account
    b: int  # in the compared run's

    @property
    def delta(self) -> int:
        return self.b - self.a


@dataclass(frozen=True)
class Explanation:
    cell: str  # the finding's cell name (arch/variant/size[/axes])
    stage: str
    counters: tuple[str, ...]  # which regressed: minflt, majflt
    base_run: str
    run: str
    why_not: str = ""  # set when there is no diff: why (no account on a side)
    base_total: int = 0  # faults in the stage, per the accounts
    total: int = 0
    rows: tuple[Row, ...] = ()  # non-zero differences, worst first (at most TOP)
    rest: int = 0  # the sum of the differences beyond TOP

    @property
    def explained(self) -> bool:
        return not self.why_not


def _run_dir(store: Store, run_id: str) -> tuple[Path | None, str]:
    try:
        run = store.run(run_id)
    except UserError:
        return None, f"run {run_id} is not in this store (a baseline imported from elsewhere)"
    if not run.run_dir or not Path(run.run_dir).is_dir():
        return None, f"run {run_id}'s directory {run.run_dir or '(none)'} was pruned"
    return Path(run.run_dir), ""


def _account(run_dir: Path | None, why: str, run_id: str, cell: Cell | None) -> tuple[account.Account | None, str]:
    if run_dir is None:
        return None, why
    if cell is None:
        return None, f"run {run_id} did not measure the cell"
    if not (run_dir / "explain").is_dir():
        return None, f"run {run_id} ran without --explain"
    d = render.find(run_dir, cell.arch, cell.variant, cell.buffer_size, cell.axes)
    if d is None:
        return None, f"run {run_id} has no traced account of the cell"
    if "damaged" in d or "error" in d:
        return None, str(d.get("damaged") or f"run {run_id}'s traced run failed: {d['error']}")
    return render.from_dict(d)[0], ""


def _names(store: Store, run_id: str) -> dict[str, Cell]:
    return {cell_name(c.arch, c.variant, c.buffer_size, c.axes): c for _, c in store.cells(run_id)}


def explain(store: Store, comparison: Comparison, base_run: str) -> list[Explanation]:
    """Each regressed (cell, stage) of ``comparison`` (whose baseline side was measured by ``base_run``), explained
    from both runs' traced accounts where both have one; worst (largest median rise) first."""
    regressed: dict[tuple[str, str], list[str]] = {}
    rise: dict[tuple[str, str], float] = {}
    for f in comparison.findings:
        if f.verdict == "regressed":
            regressed.setdefault((f.cell, f.stage), []).append(f.counter)
            rise[(f.cell, f.stage)] = rise.get((f.cell, f.stage), 0.0) + (f.delta or 0.0)
    if not regressed:
        return []
    (a_dir, a_why), a_cells = _run_dir(store, base_run), _names(store, base_run)
    (b_dir, b_why), b_cells = _run_dir(store, comparison.run_id), _names(store, comparison.run_id)
    out = []
    for (name, stage), counters in sorted(regressed.items(), key=lambda kv: (-rise[kv[0]], kv[0])):
        acc_a, why_a = _account(a_dir, a_why, base_run, a_cells.get(name))
        acc_b, why_b = _account(b_dir, b_why, comparison.run_id, b_cells.get(name))
        common = (name, stage, tuple(counters), base_run, comparison.run_id)
        if acc_a is None or acc_b is None:
            out.append(Explanation(*common, why_not="; ".join(w for w in (why_a, why_b) if w)))
            continue
        rows = [Row(r.object, r.section, r.function, r.a, r.b) for r in account.diff(acc_a, acc_b, stage, functions=True) if r.delta]
        out.append(Explanation(*common, "", acc_a.total(stage), acc_b.total(stage), tuple(rows[:TOP]), sum(r.delta for r in rows[TOP:])))
    return out


def to_json(explanations: list[Explanation]) -> str:
    return json.dumps([asdict(e) for e in explanations])


def from_json(text: str) -> list[Explanation]:
    out = []
    for d in json.loads(text or "[]"):
        rows = tuple(Row(**r) for r in d.pop("rows"))
        out.append(Explanation(**{**d, "counters": tuple(d["counters"]), "rows": rows}))
    return out


def text(explanations: list[Explanation]) -> str:
    """The terminal form (``lab compare --explain``): one block per regressed stage, worst first."""
    if not explanations:
        return "no regression to explain\n"
    out = []
    for e in explanations:
        head = f"{e.cell} {e.stage} ({', '.join(e.counters)} regressed): run {e.base_run} -> run {e.run}"
        if not e.explained:
            out += [head, f"  not explained: {e.why_not}", ""]
            continue
        out += [f"{head}: traced {e.base_total} -> {e.total} faults ({e.total - e.base_total:+d})", ""]
        rows = [(r.object, r.section, r.function, r.a, r.b, f"{r.delta:+d}") for r in e.rows]
        out += text_table(rows, ("object", "section", "function", "baseline", "this run", "difference"), right_from=3).splitlines()
        if e.rest:
            out.append(f"  ... and {e.rest:+d} more in smaller differences")
        out.append("")
    return "\n".join(out) + "\n"
