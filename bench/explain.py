"""`lab run --explain` against `lab run`, measured side by side in one run (issue 12's target: at most 1.5x).

Usage: .venv/bin/python bench/explain.py [--repeat 5] [--rounds 3]

Both commands run warm on the full default matrix (3 arches x 4 variants), alternating, --rounds times;
the medians and their ratio are printed, with the traced-versus-untraced agreement of every cell of the
last traced run (its checks). Results and stores go to a temp directory; the lab's cache is used warm.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from benchlib import lab_run, options, temp_config

from lab.explain import render


def main() -> int:
    args, cfg = options(__doc__)
    with tempfile.TemporaryDirectory(prefix="lab-bench-explain-") as tmp:
        conf = temp_config(cfg, tmp)
        lab_run(conf, "--out", f"{tmp}/warm", "--repeat", "1", "--explain", quiet=True)  # warm every cache (tracer, debug symbols) first
        plain, traced = [], []
        for i in range(args.rounds):
            plain.append(lab_run(conf, "--out", f"{tmp}/plain{i}", "--repeat", str(args.repeat), quiet=True)[0])
            traced.append(lab_run(conf, "--out", f"{tmp}/traced{i}", "--repeat", str(args.repeat), "--explain", quiet=True)[0])
            print(f"round {i + 1}: lab run {plain[-1]:.1f}s, lab run --explain {traced[-1]:.1f}s", file=sys.stderr)
        a, b = statistics.median(plain), statistics.median(traced)
        print(f"\nwarm, --repeat {args.repeat}, 3 arches x 4 variants, median of {args.rounds} alternating rounds")
        print(f"  lab run              {a:6.1f}s  (range {min(plain):.1f}-{max(plain):.1f})")
        print(f"  lab run --explain    {b:6.1f}s  (range {min(traced):.1f}-{max(traced):.1f})   ratio {b / a:.2f} (target <= 1.5)")
        runs = sorted((Path(tmp) / f"traced{args.rounds - 1}" / "runs").iterdir())
        print("\ntraced vs untraced, last traced run:")
        for d in render.load_dir(runs[-1]):
            if "error" in d:
                print(f"  {d['error']}")
                continue
            acc, checks = render.from_dict(d)
            bad = [c.name for c in checks if not c.ok]
            entry = acc.stage_totals()["entry"][0]
            print(
                f"  {acc.cell:<24} entry {entry:>3} since exec, exec set-up {acc.unsampled}: {'all checks ok' if not bad else 'FAILED ' + ', '.join(bad)}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
