"""The files of a nightly job (a dated directory of report, JUnit and comparison) and run-directory retention."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from lab.errors import InfraError
from lab.files import write_atomic
from lab.results import junit
from lab.results.compare import Comparison, table, to_json
from lab.results.store import Store


def new_dir(root: Path, stamp: str | None = None) -> Path:
    """A fresh dated directory under ``root``: two nightlies finishing in the same second get two directories."""
    stamp = stamp or time.strftime("%Y-%m-%d-%H%M%S")
    try:
        root.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            candidate = root / (stamp if n == 1 else f"{stamp}-{n}")
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
    except OSError as exc:
        raise InfraError(f"cannot create a directory in {root}: {exc.strerror}", "check nightly.dir (free space, permissions)") from None
    raise InfraError(f"{root}: 999 nightly directories named {stamp}", "clean up nightly.dir")


def prune_runs(store: Store, runs_dir: Path, keep: int) -> list[Path]:
    """Delete run directories beyond the newest ``keep``; never a running run's, nor one a baseline references. Store rows stay."""
    runs = store.runs()
    protected = {source for _, _, source in store.baselines()} | {r.id for r in runs if r.status == "running"}
    parts = {r.id for r in runs if r.part_of}  # a fleet run's host runs: not counted, not pruned on their own
    dirs = sorted((d for d in runs_dir.iterdir() if d.is_dir() and d.name not in parts), key=lambda d: d.name) if runs_dir.exists() else []
    doomed = [d for d in dirs[: max(0, len(dirs) - keep)] if d.name not in protected]
    for d in doomed:
        shutil.rmtree(d)
    return doomed


def write_nightly(out_dir: Path, c: Comparison, report_html: str, report_md: str, seconds: float = 0.0, explained: str = "") -> list[Path]:
    files = {
        "report.html": report_html,
        "report.md": report_md,
        "junit.xml": junit.to_junit(c, seconds),
        "compare.json": to_json(c),
        "compare.txt": table(c),
        **({"regressions.txt": explained} if c.exit_code == 1 else {}),
    }
    for name, text in files.items():
        write_atomic(out_dir / name, text)
    return [out_dir / n for n in files]
