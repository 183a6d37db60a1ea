"""Baselines: a run's per-cell distributions and environments, kept by name and as reviewable YAML.

A baseline is stored as its YAML document (the same text ``lab baseline export``
prints), so what is reviewed in git is exactly what is compared against.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict
from pathlib import Path

import yaml

from lab import axes as axes_mod
from lab.errors import UserError
from lab.results.store import Store
from lab.results.verdict import COUNTERS, ENV_FIELDS, OPTIONAL_ENV, CellData

# libyaml's safe loader where PyYAML was built with it (the pure-Python one took 4.5 min on a 55 MB baseline)
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SCHEMA = "lab.baseline"
# v2: cells may carry "axes"; v1 documents (no axes) are read as all-default cells. v3: every cell's axes are
# absolute (lab.axes.identity); v1 and v2 documents' are made so from the environment they recorded.
SCHEMA_VERSION = 3
READABLE = (1, 2, 3)


def run_cells(store: Store, run_id: str) -> tuple[list[CellData], set[tuple[str, str, int, str]]]:
    """A run's measured cells as distributions, and the keys of the cells that errored."""
    cells = []
    for cell, per_stage in store.measured(run_id):
        stages = {stage: {"minflt": minor, "majflt": major} for stage, (minor, major) in per_stage.items()}
        env = {k: v for k, v in asdict(cell).items() if k in ENV_FIELDS}
        cells.append(CellData(cell.arch, cell.variant, cell.buffer_size, env, stages, cell.axes))
    errored = {(e.arch, e.variant, e.buffer_size, e.axes) for e in store.errors(run_id)}
    return cells, errored


class _Dumper(yaml.SafeDumper):
    """Block style for mappings (one field per line diffs well), flow style for the lists of counts."""


_Dumper.add_representer(
    list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=all(isinstance(x, int | str) for x in v))
)


def document(name: str, run_id: str, cells: list[CellData]) -> str:
    doc = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "source_run": run_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cells": [
            {
                "arch": c.arch,
                "variant": c.variant,
                "buffer_size": c.buffer_size,
                "axes": c.axes,
                "env": dict(c.env),
                "stages": {stage: {k: list(v) for k, v in counters.items()} for stage, counters in c.stages.items()},
            }
            for c in cells
        ],
    }
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def _bad(source: str, where: str, what: str) -> UserError:
    return UserError(f"{source}: {where}: {what}", "export a baseline with lab baseline export to see the expected form")


def parse(text: str, source: str) -> tuple[str, str, list[CellData]]:
    """(name, source run, cells) from a baseline document; every problem names the field."""
    try:
        doc = yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise _bad(source, f"line {mark.line + 1}" if mark else "document", "not valid YAML") from None
    if not isinstance(doc, dict):
        raise _bad(source, "document", "not a mapping")
    if doc.get("schema") != SCHEMA or doc.get("schema_version") not in READABLE:
        raise UserError(
            f"{source}: schema {doc.get('schema')!r} v{doc.get('schema_version')!r} is not {SCHEMA} v{'/'.join(map(str, READABLE))}",
            "re-create the baseline with this lab (lab baseline save), or use the lab version that wrote it",
        )
    name, run = doc.get("name"), doc.get("source_run")
    if not isinstance(name, str) or not name or not isinstance(run, str):
        raise _bad(source, "name/source_run", "missing or not text")
    check_name(name, f"{source}: name")
    raw_cells = doc.get("cells")
    if not isinstance(raw_cells, list):
        raise _bad(source, "cells", "not a list")
    cells = []
    for i, c in enumerate(raw_cells):
        where = f"cells[{i}]"
        if not isinstance(c, dict):
            raise _bad(source, where, "not a mapping")
        if not isinstance(c.get("arch"), str) or not isinstance(c.get("variant"), str) or not isinstance(c.get("buffer_size"), int):
            raise _bad(source, where, "arch, variant and buffer_size are required")
        env = c.get("env")
        if isinstance(env, dict):  # saved before lab recorded hosts (store v5)
            env = {**dict.fromkeys(OPTIONAL_ENV, ""), **env}
        if not isinstance(env, dict) or set(env) != set(ENV_FIELDS):
            raise _bad(source, f"{where}.env", "must hold exactly: " + ", ".join(ENV_FIELDS))
        stages = c.get("stages")
        if not isinstance(stages, dict) or not stages:
            raise _bad(source, f"{where}.stages", "not a mapping of stages")
        for stage, counters in stages.items():
            ok = isinstance(counters, dict) and set(counters) == set(COUNTERS)
            ok = ok and all(
                isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) for x in v) for v in counters.values()
            )
            if not ok:
                raise _bad(source, f"{where}.stages.{stage}", "needs minflt and majflt as non-empty lists of integers")
        axes = c.get("axes", "")
        if not isinstance(axes, str):
            raise _bad(source, f"{where}.axes", "not text")
        if doc["schema_version"] < 3:  # relative to the lab.yaml of its day: made absolute from what it recorded
            page = env.get("page_size")
            axes = axes_mod.explicit(
                axes, {"thp": str(env.get("thp")), **({"pagesize": axes_mod.pagesize_of(page)} if isinstance(page, int) else {})}
            )
        cells.append(CellData(c["arch"], c["variant"], c["buffer_size"], env, stages, axes))
    return name, run, cells


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str, source: str = "baseline name") -> str:
    """Names go into file names, YAML and command lines: letters, digits, ``.``, ``_``, ``-``."""
    if not _NAME.match(name):
        raise UserError(f"{source} {name!r} is not valid", "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def save(store: Store, name: str, run_ref: str | None) -> tuple[str, int]:
    """Save a run (default: the latest complete one) as baseline ``name``; returns (run id, cell count)."""
    check_name(name)
    if run_ref is None:
        complete = [r for r in store.runs() if r.status == "complete"]
        if not complete:
            raise UserError(f"no complete run in {store.path} to save as a baseline", "run lab run first, or name a run with --run")
        run = complete[-1]
    else:
        run = store.run(run_ref)
    cells, _ = run_cells(store, run.id)
    if not cells:
        raise UserError(f"run {run.id} has no measured cells", "pick a run with results (lab runs list)")
    store.save_baseline(name, run.id, document(name, run.id, cells))
    return run.id, len(cells)


def load(store: Store, name: str) -> tuple[str, list[CellData]]:
    _, run, cells = parse(store.baseline_document(name), f"baseline {name!r}")
    return run, cells


def import_file(store: Store, path: Path, replace: bool = False) -> str:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})", "check the path") from None
    name, run, _ = parse(text, str(path))
    store.save_baseline(name, run, text, replace=replace)
    return name
