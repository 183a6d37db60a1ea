"""A synthetic year of nightlies in a real store (for the site's unit tests and bench/site.py): every night a
run of ``len(arches) x 4`` cells, judged against the ``nightly`` baseline by the real verdict code, with the
environment changing now and then (kernel, libc, QEMU, toolchain: the baseline is saved again the night
after) and one cell regressing on purpose for a few nights."""

from __future__ import annotations

from pathlib import Path

from lab.results import baselines, compare, regressions
from lab.results.rows import Cell, Nightly, RunMeta, Sample
from lab.results.store import Store
from lab.results.verdict import Tolerance

STAGES = ("entry", "malloc", "touch1", "touch2", "file_map", "file_read", "exit")
VARIANTS = (("glibc-dynamic", "glibc", "dynamic", 53), ("glibc-static", "glibc", "static", 24),
            ("musl-dynamic", "musl", "dynamic", 25), ("musl-static", "musl", "static", 6))  # fmt: skip
AXES = "cache=cold,kernel=trixie,pagesize=4k,qemu=trixie-backports,scratch=ram,suite=trixie,thp=never"
DAY = 86400.0
T0 = 1_764_547_200.0  # 2025-12-01 00:00 UTC


def env(night: int) -> dict[str, str]:
    """The environment of a night: kernel updates every 90 nights, libc at 120, QEMU at 200, toolchain at 300."""
    return {
        "kernel_release": f"6.12.{38 + night // 90}+deb13-amd64",
        "libc_version_run": "2.41" if night < 120 else "2.42",
        "qemu_version": "QEMU emulator version 11.1.3" if night < 200 else "QEMU emulator version 11.2.0",
        "toolchain": "clang 16.0.6 + zig ld.lld 0.15.2" if night < 300 else "clang 19.1.7 + zig ld.lld 0.15.2",
    }


def cell(arch: str, variant: tuple[str, str, str, int], night: int) -> Cell:
    e = env(night)
    return Cell(arch, variant[0], variant[1], variant[2], 1 << 20, e["libc_version_run"], e["libc_version_run"], e["toolchain"],
                "-O2", "img", "pay", e["kernel_release"], 4096, "never", e["qemu_version"], "tcg", 2, 1, AXES, "restored",
                "h", "", "trixie-backports 1:11.1.3", "ram", "trixie linux-image 6.12", 256, 64)  # fmt: skip


def counts(base: int, night: int, repeat: int, bump: int) -> list[Sample]:
    out = []
    for r in range(repeat):
        noise = (night + r) % 2
        per = {"entry": base + noise + bump, "malloc": 4, "touch1": 256, "touch2": 0, "file_map": noise, "file_read": 0, "exit": 1}
        out += [Sample(r, s, v, 256 if s == "file_read" else 0, v, 256 if s == "file_read" else 0, 1000) for s, v in per.items()]
    return out


def changed(night: int, stride: int = 1) -> bool:
    return night > 0 and env(night) != env(night - stride)


def year(db: Path, nights: int = 365, arches: tuple[str, ...] = ("x86_64", "arm64", "riscv64"), repeat: int = 3,
         regress: tuple[int, int] = (250, 253), run_dirs: Path | None = None, keep_dirs: int = 14, stride: int = 1) -> list[str]:  # fmt: skip
    """Fill ``db``; the run ids, oldest first. ``arm64 glibc-dynamic`` gains 9 entry faults on nights in ``regress``;
    night N's environment is night N x ``stride``'s (a short store whose environment moves as a year's does)."""
    ids = []
    tol: tuple[Tolerance, dict[str, Tolerance]] = (Tolerance(2, 5), {})
    with Store(db) as store:
        for night in range(nights):
            run_id = f"{night:04d}-night"
            started = T0 + night * DAY
            run_dir = run_dirs / run_id if run_dirs is not None else None
            if run_dir is not None and night >= nights - keep_dirs:
                run_dir.mkdir(parents=True, exist_ok=True)
            meta = RunMeta(run_id, started, "h", 1, "0.1.0" if night * stride < 180 else "0.2.0", "abc", "cfg", "lab nightly", repeat,
                           str(run_dir or f"/nonexistent/{run_id}"), "complete", started + 900.0)  # fmt: skip
            cells = []
            for arch in arches:
                for v in VARIANTS:
                    bump = 9 if arch == "arm64" and v[0] == "glibc-dynamic" and regress[0] <= night < regress[1] else 0
                    cells.append((cell(arch, v, night * stride), counts(v[3], night, repeat, bump)))
            store.insert_run(meta, cells, [])
            ids.append(run_id)
            if night == 0 or changed(night * stride, stride):
                baselines.save(store, "nightly", run_id) if night == 0 else _resave(store, run_id)
                continue
            result = compare.against_baseline(store, "nightly", run_id, tol)
            source = baselines.load(store, "nightly")[0]
            explained = regressions.explain(store, result, source)
            store.add_nightly(Nightly(run_id, started + 901.0, f"/nonexistent/nightly/{night}", "nightly", source, result.exit_code,
                                      compare.to_json(result), regressions.to_json(explained)))  # fmt: skip
    return ids


def _resave(store: Store, run_id: str) -> None:
    store.delete_baseline("nightly")
    baselines.save(store, "nightly", run_id)
