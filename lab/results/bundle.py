"""Run bundles: one run (cells, samples, errors, environment, run directory) as a portable archive.

``lab export RUN --bundle`` writes ``<run>.labrun.tar.gz``: ``manifest.json`` (format, bundle schema,
the run id, and a SHA256 per member), ``run.json`` (the run's rows) and ``rundir/`` (its run directory).
``lab import BUNDLE`` checks the schema and every checksum before it writes anything, then inserts the
run in one transaction and unpacks its run directory under ``<results>/runs/``. Importing a bundle
whose run is already in the store with the same content changes nothing; different content is refused.
A fleet (lab.fleet) moves every host's run to the controller this way.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from lab import axes
from lab.errors import UserError
from lab.files import sha256_text
from lab.results.schema import ERROR_STAGES, explicit_cell_axes
from lab.results.store import Cell, CellError, RunMeta, Sample, Store

FORMAT = "lab-run-bundle"
SCHEMA = 2  # bump when run.json's layout changes incompatibly; import refuses any other but READABLE
READABLE = (1, 2)  # 1: identities relative to that lab.yaml's defaults, made absolute on import (store v8)
SUFFIX = ".labrun.tar.gz"


@dataclass(frozen=True)
class Imported:
    run_id: str
    status: str
    cells: int
    errors: int
    new: bool  # False: the store already held this run, unchanged


Run = tuple[RunMeta, list[tuple[Cell, list[Sample]]], list[CellError]]


def _load(store: Store, run_ref: str | None) -> Run:
    """A run as the store holds it: its row, its cells with their samples, its errors."""
    meta = store.run(run_ref)
    return meta, [(c, store.samples(cid)) for cid, c in store.cells(meta.id)], store.errors(meta.id)


def _rows(meta: RunMeta, cells: list[tuple[Cell, list[Sample]]], errors: list[CellError]) -> dict[str, Any]:
    """run.json's document for a run."""
    listed = [{"cell": asdict(c), "samples": [asdict(s) for s in ss]} for c, ss in cells]
    return {"run": asdict(meta), "cells": listed, "errors": [asdict(e) for e in errors]}


def export(store: Store, run_ref: str | None, out: Path | None) -> Path:
    """Write the run's bundle (default: ``./<run id>.labrun.tar.gz``); a running run cannot be exported."""
    run = _load(store, run_ref)
    meta = run[0]
    if meta.status == "running":
        raise UserError(f"run {meta.id} is still running", "export it when it has ended")
    rows = _rows(*run)
    out = out or Path.cwd() / f"{meta.id}{SUFFIX}"
    members: dict[str, bytes] = {"run.json": json.dumps(rows, indent=1, sort_keys=True).encode()}
    run_dir = Path(meta.run_dir)
    if run_dir.is_dir():
        for f in sorted(p for p in run_dir.rglob("*") if p.is_file() and not p.is_symlink()):
            members[f"rundir/{f.relative_to(run_dir).as_posix()}"] = f.read_bytes()
    created = time.time()
    manifest = {
        "format": FORMAT,
        "schema": SCHEMA,
        "run_id": meta.id,
        "created": created,
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()},
    }
    if out.is_dir():
        raise UserError(f"-o {out}: is a directory", f"name the bundle file, e.g. {out / (meta.id + SUFFIX)}")
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tmp, "w:gz") as tar:
            for name, data in {"manifest.json": json.dumps(manifest, indent=1).encode(), **members}.items():
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), int(created), 0o644
                tar.addfile(info, io.BytesIO(data))
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"-o {out}: cannot write the bundle ({exc.strerror})", "pick a writable place with free space") from None
    return out


def _bad(path: Path, what: str) -> UserError:
    return UserError(f"{path}: not a usable lab run bundle: {what}", "export it again with lab export RUN --bundle")


def read(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The bundle's run rows and run-directory files, every checksum verified."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            members: dict[str, bytes] = {}
            for info in tar.getmembers():
                parts = Path(info.name).parts
                if not info.isfile() or info.name.startswith("/") or ".." in parts:
                    raise _bad(path, f"unexpected member {info.name!r}")
                f = tar.extractfile(info)
                members[info.name] = f.read() if f else b""
    except FileNotFoundError:
        raise UserError(f"{path}: no such bundle", "give the path of a .labrun.tar.gz file") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _bad(path, f"unreadable archive ({exc})") from None
    try:
        manifest = json.loads(members.pop("manifest.json"))
    except (KeyError, ValueError):
        raise _bad(path, "no manifest.json") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _bad(path, f"format is not {FORMAT}")
    if manifest.get("schema") not in READABLE:
        raise UserError(
            f"{path}: bundle schema {manifest.get('schema')!r}, this lab reads schema {'/'.join(map(str, READABLE))}",
            "import it with the lab version that exported it, or export it again with this one",
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(members):
        raise _bad(path, "its members do not match its manifest")
    for name, data in members.items():
        if hashlib.sha256(data).hexdigest() != files[name]:
            raise _bad(path, f"checksum mismatch in {name}")
    try:
        rows = json.loads(members.pop("run.json"))
    except (KeyError, ValueError):
        raise _bad(path, "no readable run.json") from None
    if not isinstance(rows, dict) or {"run", "cells", "errors"} - set(rows):
        raise _bad(path, "run.json lacks run, cells or errors")
    if manifest["schema"] == 1:
        _absolute(rows)
    return rows, {name.removeprefix("rundir/"): data for name, data in members.items()}


def _absolute(rows: dict[str, Any]) -> None:
    """A schema 1 bundle's identities made absolute, as the store's v8 migration makes a store's."""
    for c in rows["cells"] if isinstance(rows["cells"], list) else []:
        cell = c.get("cell") if isinstance(c, dict) else None
        if isinstance(cell, dict) and isinstance(cell.get("axes", ""), str):
            thp, page, origin, scratch = (
                cell.get(k, d) for k, d in (("thp", ""), ("page_size", 4096), ("qemu_origin", ""), ("scratch", ""))
            )
            if isinstance(page, int) and all(isinstance(v, str) for v in (thp, origin, scratch)):  # else _make names the field
                cell["axes"] = explicit_cell_axes(cell.get("axes", ""), thp, page, origin, scratch)
    for e in rows["errors"] if isinstance(rows["errors"], list) else []:
        if isinstance(e, dict) and isinstance(e.get("axes", ""), str):
            e["axes"] = axes.explicit(e.get("axes", ""), {})


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "str | None": (str, type(None)),
    "float | None": (float, int, type(None)),
}
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # it names a directory: no separators, no leading dot
STATUSES = ("complete", "failed", "incomplete")  # a bundle holds an ended run


def _make(cls: type[Any], data: object, path: Path, what: str) -> Any:
    """``cls`` from a bundle's mapping, every field of its declared type (the store would take anything); integers
    in float fields become floats, so the object is what the store gives back."""
    if not isinstance(data, dict):
        raise _bad(path, f"{what} is not a mapping: {data!r:.80}")
    declared = {f.name: str(f.type) for f in fields(cls)}
    if set(data) - set(declared):
        raise _bad(path, f"{what} has fields this lab does not know: {sorted(set(data) - set(declared))}")
    for name, value in data.items():
        if not isinstance(value, _TYPES.get(declared[name], (object,))) or isinstance(value, bool):
            raise _bad(path, f"{what}.{name}: {value!r:.80} is not {declared[name]}")
    fixed = {k: float(v) if declared[k].startswith("float") and isinstance(v, int) else v for k, v in data.items()}
    try:
        return cls(**fixed)
    except TypeError as exc:  # a required field missing
        raise _bad(path, f"{what}: {exc}") from None


def _list(rows: dict[str, Any], key: str, path: Path) -> list[Any]:
    value = rows[key]
    if not isinstance(value, list):
        raise _bad(path, f"run.json {key} is not a list")
    return value


def _parse(rows: dict[str, Any], path: Path) -> Run:
    meta: RunMeta = _make(RunMeta, rows["run"], path, "run")
    if not RUN_ID.fullmatch(meta.id):
        raise _bad(path, f"run id {meta.id!r:.80} is not one lab writes")
    if meta.status not in STATUSES:
        raise _bad(path, f"run status {meta.status!r:.20} is not one of {', '.join(STATUSES)}")
    cells = []
    for c in _list(rows, "cells", path):
        if not isinstance(c, dict) or not isinstance(c.get("samples"), list):
            raise _bad(path, f"a cell entry is not a mapping with a samples list: {c!r:.80}")
        cells.append((_make(Cell, c.get("cell"), path, "cell"), [_make(Sample, s, path, "sample") for s in c["samples"]]))
    errors = [_make(CellError, e, path, "error") for e in _list(rows, "errors", path)]
    for e in errors:
        if e.stage not in ERROR_STAGES:
            raise _bad(path, f"error.stage {e.stage!r:.20} is not one of {', '.join(ERROR_STAGES)}")
    return meta, cells, errors


def _digest(meta: RunMeta, cells: list[tuple[Cell, list[Sample]]], errors: list[CellError]) -> str:
    """A run's content: everything but where its run directory lives and which fleet run it is part of."""
    rows = _rows(meta, cells, errors)
    rows["run"] = {k: v for k, v in rows["run"].items() if k not in ("run_dir", "part_of")}
    return sha256_text(json.dumps(rows, sort_keys=True))


def import_(store: Store, path: Path, results_dir: Path, part_of: str = "") -> Imported:
    """Import one bundle (idempotent); nothing is written unless the whole bundle checks out. ``part_of``: the fleet
    run this host's run belongs to (it is then never "the latest run" itself)."""
    rows, files = read(path)
    meta, cells, errors = _parse(rows, path)
    summary = Imported(meta.id, meta.status, len(cells), len(errors), new=True)
    if any(m.id == meta.id for m in store.runs()):
        if _digest(*_load(store, meta.id)) != _digest(meta, cells, errors):
            raise UserError(
                f"{path}: run {meta.id} is already in {store.path} with different content",
                "import it into another store (run.store), or leave the one already there",
            )
        return Imported(meta.id, meta.status, len(cells), len(errors), new=False)
    run_dir = results_dir / "runs" / meta.id
    results_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{meta.id}-", dir=results_dir))
    try:
        try:
            for name, data in files.items():
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        except OSError as exc:  # members that cannot all be files (a/ and a/b), or a full disk
            raise _bad(path, f"its run directory cannot be unpacked ({exc.strerror}: {exc.filename})") from None
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(run_dir)  # the directory first: a run row never points at a directory that is not there
        try:
            store.insert_run(replace(meta, run_dir=str(run_dir), part_of=part_of), cells, errors)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary
