"""Accounts as data (stored in run directories, ``--format json``) and as tables (text and Markdown).

Pure. :func:`to_dict`/:func:`from_dict` round-trip an account with its checks
and ELF notes; :func:`table` and :func:`diff_table` render what ``lab explain``
prints.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lab.explain.account import Account, DiffRow, Fault, ObjectInfo
from lab.explain.checks import Check
from lab.files import write_atomic
from lab.text import text_table

FORMATS = ("table", "json", "md")
FORMAT = 1  # version of the stored form


def to_dict(acc: Account, checks: Sequence[Check] = (), extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "cell": acc.cell,
        "argv": list(acc.argv),
        "stages": list(acc.stages),
        "unsampled": acc.unsampled,
        "exec_bound": acc.exec_bound,
        "page_size": acc.page_size,
        "pre_exec": acc.pre_exec,
        "rusage_total": acc.rusage_total,
        "stage_totals": {k: list(v) for k, v in acc.stage_totals().items()},
        "probe_stages": {k: list(v) for k, v in acc.probe_stages.items()},
        "objects": [asdict(o) for o in acc.objects],
        "notes": list(acc.notes),
        "checks": [asdict(c) for c in checks],
        "faults": [[int(f.major), f.stage, f.object, f.section, f.function, int(f.kernel), f.region, f.page] for f in acc.faults],
        **(extra or {}),
    }


def from_dict(d: dict[str, Any]) -> tuple[Account, list[Check]]:
    acc = Account(
        cell=d["cell"],
        argv=tuple(d["argv"]),
        faults=tuple(Fault(bool(f[0]), f[1], f[2], f[3], f[4], bool(f[5]), f[6], *f[7:8]) for f in d["faults"]),
        unsampled=d["unsampled"],
        pre_exec=d["pre_exec"],
        rusage_total=d["rusage_total"],
        stages=tuple(d["stages"]),
        objects=tuple(ObjectInfo(**o) for o in d["objects"]),
        probe_stages={k: (v[0], v[1]) for k, v in d["probe_stages"].items()},
        notes=tuple(d.get("notes", ())),
        exec_bound=d.get("exec_bound"),
        page_size=d.get("page_size"),
    )
    return acc, [Check(**c) for c in d.get("checks", ())]


def _grid(header: Sequence[str], rows: Sequence[Sequence[object]], md: bool) -> list[str]:
    if not md:
        return text_table(rows, header, right_from=2).splitlines()
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def headline(acc: Account, stage: str | None) -> str:
    total = acc.total(stage)
    where = f"stage {stage}" if stage else "whole run"
    line = f"{acc.cell} ({where}): {total} faults since exec"
    if stage is None or stage == (acc.stages[0] if acc.stages else None):
        line += f"; the launcher's fork took {acc.pre_exec} more before exec (rusage {acc.rusage_total})"
    return line


def table(acc: Account, checks: Sequence[Check] = (), stage: str | None = None, md: bool = False, top: int = 10) -> str:
    """One account: faults by object × section, top functions, stages, objects' ELF facts, checks."""
    h = "### " if md else ""
    out = [f"{h}{headline(acc, stage)}", ""]
    out += _grid(("object", "section", "minor", "major"), acc.rows(stage), md)
    out += ["", f"{h}top functions (faulting instruction)" if md else "top functions (faulting instruction):"]
    out += _grid(("function", "faults"), acc.functions(stage, top), md)
    if len(acc.stages) > 1 and stage is None:
        out += ["", "per stage (minor/major since exec):"]
        out += _grid(("stage", "minor", "major"), [(s, *v) for s, v in acc.stage_totals().items()], md)
    if acc.objects:
        out += ["", "objects:"]
        rows = [
            (
                o.label,
                o.path,
                o.facts.get("relocations", "?"),
                o.facts.get("load_segments", "?"),
                o.facts.get("relro_bytes", "?"),
                o.symbols,
            )
            for o in acc.objects
        ]
        out += _grid(("object", "file", "relocs", "LOAD segs", "RELRO bytes", "names from"), rows, md)
    for note in acc.notes:
        out += ["", note]
    if checks:
        out += ["", "checks:"] + [f"  {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in checks]
    return "\n".join(out) + "\n"


def diff_table(a: Account, b: Account, rows: Sequence[DiffRow], stage: str | None = None, md: bool = False) -> str:
    h = "### " if md else ""
    total_a, total_b = a.total(stage), b.total(stage)
    out = [
        f"{h}{b.cell} minus {a.cell} ({f'stage {stage}' if stage else 'whole run'}): {total_b} - {total_a} = {total_b - total_a:+d} faults",
        "",
    ]
    out += _grid(
        ("object", "section", a.cell, b.cell, "difference"), [(r.object, r.section, r.a, r.b, f"{r.delta:+d}") for r in rows if r.delta], md
    )
    same = sum(1 for r in rows if not r.delta)
    if same:
        out += ["", f"{same} object/section line(s) equal in both"]
    return "\n".join(out) + "\n"


def stem(variant: str, size: int, axes: str) -> str:
    """The file name (without suffix) of one cell's traced run under ``explain/<group>/``."""
    return f"{variant}-{size}" + (f"-{axes}" if axes else "")


def find(run_dir: Path, arch: str, variant: str, size: int, axes: str) -> dict[str, Any] | None:
    """One cell's stored account (or ``{"error"|"damaged": ...}``) in a run directory; None: the cell was not traced."""
    root, name = run_dir / "explain", f"{stem(variant, size, axes)}.json"
    for group in sorted(root.iterdir()) if root.is_dir() else ():
        if (group / name).is_file():
            [d] = load_files([group / name])
            if d.get("arch", arch) == arch or "damaged" in d:
                return d
    return None


def write(run_dir: Path, group: str, stem: str, data: dict[str, Any]) -> Path:
    """One traced cell's stored form (or ``{"error": ...}``) at ``<run dir>/explain/<group>/<stem>.json``."""
    path = run_dir / "explain" / group / f"{stem}.json"
    write_atomic(path, json.dumps(data) + "\n")
    return path


def load_dir(run_dir: Path) -> list[dict[str, Any]]:
    """Every stored account (or error) of a run, by group then cell; a file that does not parse is
    ``{"damaged": "PATH: why"}`` (the others still load)."""
    root = run_dir / "explain"
    return load_files(sorted(root.glob("*/*.json"))) if root.is_dir() else []


def load_files(paths: Sequence[Path]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        try:
            d = json.loads(p.read_text())
            if not isinstance(d, dict) or not ("error" in d or from_dict(d)):
                raise ValueError("not a stored account")
            out.append(d)
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError) as exc:
            out.append({"damaged": f"{p}: traced account does not parse ({type(exc).__name__}: {str(exc)[:120]})"})
    return out
