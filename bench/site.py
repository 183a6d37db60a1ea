"""`lab site` on a synthetic year of nightlies (issue 24's target: fast for a year, and incremental).

Usage: .venv/bin/python bench/site.py [--nights 365] [--arches 3] [--rounds 3]

A real store (tests/unit/synthetic_store.py: every night a run of arches x 4 cells, 3 repeats, 7 stages, judged
against the nightly baseline by the real verdict code, with kernel, libc, QEMU, toolchain and lab changing
during the year and one cell regressing) is built into a site from nothing, again with nothing new, and
again after one new night; each --rounds times side by side. Prints the medians, the pages rewritten, and
the site's size.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.results import site
from lab.results.store import Store
from tests.unit.synthetic_store import VARIANTS, cell, counts, year


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nights", type=int, default=365)
    p.add_argument("--arches", type=int, default=3, help="arches per night (x 4 variants = cells)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    names = ("x86_64", "arm64", "riscv64", "ppc64el", "s390x", "armhf", "i386", "loong64")[: args.arches]
    with tempfile.TemporaryDirectory(prefix="lab-bench-site-") as tmp:
        db = Path(tmp) / "lab.sqlite"
        t = time.monotonic()
        year(db, args.nights, names, run_dirs=Path(tmp) / "runs")
        print(
            f"synthetic store: {args.nights} nightly runs x {len(names) * 4} cells in {time.monotonic() - t:.1f} s, {db.stat().st_size / 1e6:.1f} MB"
        )
        cold, noop, one = [], [], []
        for r in range(args.rounds):
            out = Path(tmp) / f"site{r}"
            with Store(db, readonly=True) as s:
                t = time.monotonic()
                first = site.build(s, out, "nightly")
                cold.append(time.monotonic() - t)
                t = time.monotonic()
                again = site.build(s, out, "nightly")
                noop.append(time.monotonic() - t)
                assert again.written == (), again.written
            work = Path(tmp) / f"one{r}.sqlite"
            shutil.copyfile(db, work)
            with Store(work) as s:
                last = s.runs()[-1]
                meta = replace(last, id=f"new-night-{r}", started=last.started + 86400, ended=last.started + 87300)
                s.insert_run(meta, [(cell(a, v, args.nights), counts(v[3], args.nights, 3, 0)) for a in names for v in VARIANTS], [])
            with Store(work, readonly=True) as s:
                t = time.monotonic()
                after = site.build(s, out, "nightly")
                one.append(time.monotonic() - t)
        size = sum(f.stat().st_size for f in (Path(tmp) / "site0").rglob("*") if f.is_file())
        print(f"pages: {first.pages}; site size {size / 1e6:.1f} MB")
        print(f"build from nothing:   median {statistics.median(cold):.2f} s  (all {', '.join(f'{x:.2f}' for x in cold)})")
        print(f"build, nothing new:   median {statistics.median(noop):.2f} s  (all {', '.join(f'{x:.2f}' for x in noop)}); 0 files written")
        print(
            f"build after one run:  median {statistics.median(one):.2f} s  (all {', '.join(f'{x:.2f}' for x in one)}); {len(after.written)} files written"
        )
        print(
            f"ratios: nothing new / from nothing = {statistics.median(noop) / statistics.median(cold):.2f}, one run / from nothing = {statistics.median(one) / statistics.median(cold):.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
