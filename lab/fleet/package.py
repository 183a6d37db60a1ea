"""What a lab host installs: the controller's lab as a wheel, and the wheels of its dependencies.

The wheel is built from the controller's checkout with a fixed SOURCE_DATE_EPOCH, so the same code gives the
same bytes (a second provisioning copies nothing and changes nothing); changed code gives a new wheel, which the
role reinstalls. The dependency wheels are fetched once per set of pins (``constraints.txt``) into the cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lab.cache import BuildCache
from lab.config import Config
from lab.errors import InfraError, UserError

CHECKOUT = Path(__file__).resolve().parents[2]
EPOCH = "315532800"  # 1980-01-01, the earliest time a zip file can hold


def _pip(argv: list[str], what: str, remedy: str) -> None:
    env = {"SOURCE_DATE_EPOCH": EPOCH, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run([sys.executable, "-m", "pip", *argv], capture_output=True, text=True, env={**os.environ, **env}, timeout=900)
    if proc.returncode != 0:
        last = [ln for ln in proc.stderr.strip().splitlines() if ln.strip() and not ln.startswith("WARNING: Location")]
        raise InfraError(f"{what} failed: {(last or ['(no output)'])[-1]}", remedy)


def wheel(dest: Path) -> Path:
    """The controller's lab as a wheel in ``dest`` (rebuilt every time: cheap, and byte-identical for the same code)."""
    if not (CHECKOUT / "pyproject.toml").is_file():
        raise UserError(
            "this lab is installed from a wheel, not a checkout: nothing to build hosts' lab from", "run lab fleet from a checkout of lab"
        )
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        _pip(
            ["wheel", "-q", "--no-deps", "-w", tmp, str(CHECKOUT)], "building lab's wheel", "check that pip can reach PyPI (for setuptools)"
        )
        [built] = Path(tmp).glob("*.whl")
        target = dest / built.name
        if not target.exists() or target.read_bytes() != built.read_bytes():
            shutil.move(built, target)
    return target


def wheelhouse(cfg: Config, lab_wheel: Path) -> Path:
    """The wheels of lab's dependencies at the pinned versions, cached per constraints digest."""
    pins = CHECKOUT / "constraints.txt"
    digest = hashlib.sha256(pins.read_bytes() + sys.version.encode()).hexdigest()[:16]
    cache = BuildCache(cfg.cache_dir / "fleet", cfg.timeouts.scaled("lock"), "wheelhouse")

    def build(work: Path) -> None:
        _pip(
            ["download", "-q", "-d", str(work), "-c", str(pins), str(lab_wheel)],
            "fetching lab's dependency wheels",
            "check that pip can reach PyPI",
        )
        for own in work.glob("qemu_fault_lab-*.whl"):
            own.unlink()

    def verify(d: Path) -> str | None:
        return None if any(d.glob("*.whl")) else "no wheels"

    return cache.ensure(f"wheels-{digest}", build, verify).path
