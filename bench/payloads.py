"""Payload build times per variant and arch, cold and warm, side by side in one run.

Usage: .venv/bin/python bench/payloads.py

Cold: a throwaway cache directory, so the guest suite's sysroot is downloaded and unpacked per arch
(apt lists and the .deb pool too) before the probe is compiled. Warm: the same cache with the payload
outputs deleted, so only the probe is compiled. The lab's own cache is never touched.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from lab import arches, config
from lab.payloads.build import PayloadStore
from lab.payloads.variants import VARIANTS


def main() -> int:
    cfg = config.load(Path(__file__).resolve().parents[1] / "lab.yaml")
    rows = []
    with tempfile.TemporaryDirectory(prefix="lab-bench-payloads-") as tmp:
        store = PayloadStore(replace(cfg, cache_dir=Path(tmp)))
        for phase in ("cold", "warm"):
            if phase == "warm":
                shutil.rmtree(store.root)
            for arch in arches.ARCHES:
                for v in VARIANTS:
                    started = time.monotonic()
                    p = store.ensure(arch, v)
                    rows.append((phase, arch.name, v.name, p.info["toolchain"], time.monotonic() - started, p.info["elf"]["sizes"]["file"]))
    print(f"{'phase':<6} {'arch':<8} {'variant':<14} {'toolchain':<9} {'seconds':>8} {'bytes':>9}")
    for phase, arch_name, variant, tc, seconds, size in rows:
        print(f"{phase:<6} {arch_name:<8} {variant:<14} {tc:<9} {seconds:8.2f} {size:9d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
