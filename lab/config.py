"""Typed, frozen configuration loaded once from ``lab.yaml``. Every error names the file, the dotted key, the bad
value and what is allowed. Relative paths are resolved against the directory holding the config file."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lab import axes, resources
from lab.arches import select as select_arches
from lab.errors import UserError
from lab.payloads import variants
from lab.payloads.probe import CORE_STAGES, FILE_STAGES
from lab.text import parse_size

ACCELS = ("auto", "kvm", "tcg")
STAGES = CORE_STAGES + FILE_STAGES  # as the probe reports them
DEFAULT_CONFIG = "lab.yaml"


@dataclass(frozen=True)
class GuestConfig:
    memory_mib: int
    cpus: int
    kernel_args: tuple[str, ...]
    transparent_hugepage: str
    snapshots: bool = True  # restore booted TCG guests from a saved snapshot (lab.guests.snapshots)
    scratch: str = "ram"  # the block device under the test file (lab.axes.SCRATCHES)
    kernel: Path | None = None  # a user's own kernel file instead of Debian's (--kernel; lab.spec.KernelFile)
    modules: Path | None = None  # its modules: a directory or a .deb (--modules)


@dataclass(frozen=True)
class Timeouts:
    """Seconds, before ``multiplier`` is applied (use :meth:`scaled`)."""

    multiplier: float
    boot: float
    ssh: float
    command: float
    shutdown: float
    kvm_probe: float
    lock: float  # waiting for another process's build lock (images, payloads)
    restore: float = 20.0  # restoring (or saving) a guest snapshot

    def scaled(self, name: str) -> float:
        value: float = getattr(self, name)
        return value * self.multiplier


@dataclass(frozen=True)
class AptConfig:
    mirror: str  # "auto" or a URL
    refresh_hours: float


@dataclass(frozen=True)
class QemuConfig:
    """Which QEMU runs guests (lab.guests.emulator): ``host`` or a suite's; ``version`` pins its packages."""

    origin: str = axes.DEFAULT_QEMU
    version: str = ""  # "": the suite's current version


@dataclass(frozen=True)
class RunConfig:
    """Defaults of ``lab run``; each has a command-line override."""

    repeat: int
    sizes: tuple[str, ...]  # buffer sizes, e.g. "1M" (parsed by lab.text.parse_size)
    file_bytes: str  # how much of the scratch test file the file stages map and read
    libcs: tuple[str, ...]
    linkages: tuple[str, ...]
    jobs: int  # 0: chosen from cores and memory
    tcg_tb_size_mib: int  # TCG translation cache per guest when several run at once
    store: Path
    axes: dict[str, tuple[str, ...]]  # axis -> values (lab.axes); absent axes take their default


@dataclass(frozen=True)
class CompareConfig:
    """Verdict tolerances: a change must exceed both, per stage (see lab.verdict)."""

    faults: float
    percent: float
    stages: dict[str, dict[str, float]]


@dataclass(frozen=True)
class NightlyConfig:
    baseline: str
    keep_runs: int  # run directories kept; those a baseline references are never deleted
    dir: Path
    site: Path  # the history site every nightly brings up to date (lab.results.site)
    explain: bool  # trace every cell (lab run --explain): its regressions are explained


@dataclass(frozen=True)
class Config:
    path: Path
    host: str  # the name this host's cells carry (a fleet's inventory name); default: the machine's hostname
    arches: str
    recipe: Path
    accel: str
    guest: GuestConfig
    timeouts: Timeouts
    cache_dir: Path
    results_dir: Path
    apt: AptConfig
    run: RunConfig
    compare: CompareConfig
    nightly: NightlyConfig
    qemu: QemuConfig = QemuConfig()


class Section:
    """Reads one mapping of the YAML file, naming ``file: key`` in every error."""

    def __init__(self, file: Path, prefix: str, data: object) -> None:
        self.file, self.prefix = file, prefix
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise self._error(prefix or "(top level)", data, "a mapping of keys to values")
        self.data: Mapping[str, Any] = data
        self.seen: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def _error(self, key: str, value: object, allowed: str) -> UserError:
        return UserError(f"{self.file}: {key}: {value!r} is not valid", f"expected {allowed}")

    def _get(self, key: str, default: object) -> object:
        self.seen.add(key)
        return self.data.get(key, default)

    def section(self, key: str) -> Section:
        return Section(self.file, self._key(key), self._get(key, {}))

    def text(self, key: str, default: str, choices: tuple[str, ...] = ()) -> str:
        value = self._get(key, default)
        if not isinstance(value, str) or not value or (choices and value not in choices):
            allowed = "one of " + ", ".join(choices) if choices else "a non-empty string"
            raise self._error(self._key(key), value, allowed)
        return value

    def number(self, key: str, default: float, lo: float, hi: float, integer: bool = False) -> float:
        value = self._get(key, default)
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not lo <= value <= hi:
            what = "an integer" if integer else "a number"
            raise self._error(self._key(key), value, f"{what} from {lo:g} to {hi:g}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self._error(self._key(key), value, "true or false")
        return value

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        return int(self.number(key, default, lo, hi, integer=True))

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self._error(self._key(key), value, "a list of non-empty strings")
        return tuple(value)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            key = self._key(str(unknown[0]))
            raise UserError(
                f"{self.file}: {key}: unknown key",
                "allowed here: " + ", ".join(sorted(self.seen)),
            )


def _axes(sec: Section) -> dict[str, tuple[str, ...]]:
    """``run.axes``: {thp: [never, always], suite: [trixie, forky]}; every name and value checked against lab.axes."""
    out = {}
    for name in list(sec.data):
        try:
            values = sec.strings(name, ())
            out[name] = tuple(axes.check(name, v) for v in values)
        except UserError as exc:
            raise UserError(f"{sec.file}: run.axes.{name}: {exc.message}", exc.remedy) from None
        if not values:
            raise UserError(f"{sec.file}: run.axes.{name}: [] is not valid", "list at least one value, or leave the axis out")
    sec.finish()
    return out


def _path(base: Path, text: str) -> Path:
    path = Path(os.path.expandvars(os.path.expanduser(text)))
    return path if path.is_absolute() else (base / path).resolve()


def _home(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value and os.path.isabs(value) else Path(fallback).expanduser()


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/lab``, else ``~/.cache/lab``."""
    return _home("XDG_CACHE_HOME", "~/.cache") / "lab"


def candidates() -> list[Path]:
    """Where a config is looked for without --config: ``$LAB_CONFIG``, ./lab.yaml, ``$XDG_CONFIG_HOME/lab/lab.yaml``."""
    if os.environ.get("LAB_CONFIG"):
        return [Path(os.environ["LAB_CONFIG"])]
    return [Path(DEFAULT_CONFIG), _home("XDG_CONFIG_HOME", "~/.config") / "lab" / DEFAULT_CONFIG]


def find() -> Path:
    looked = candidates()
    for c in looked:
        if c.exists():
            return c
    why = "no config file: looked at " + ", ".join(str(c) for c in looked)
    raise UserError(why, f"pass --config FILE, set LAB_CONFIG, or copy lab.yaml to {looked[-1]}")


def load(path: Path | str | None = None, results: Path | str | None = None) -> Config:
    """Load and validate a config file (default: the first of :func:`candidates` that exists).

    ``results`` (``lab --results DIR``, else ``$LAB_RESULTS``) replaces ``paths.results``: run directories, and
    the store and nightly directory unless the file names them itself."""
    file = Path(path or find()).resolve()
    try:
        raw = yaml.safe_load(file.read_text())
    except FileNotFoundError:
        raise UserError(f"{file}: config file not found", "run from the lab checkout or pass --config FILE") from None
    except IsADirectoryError:
        raise UserError(f"{file}: is a directory, not a config file", "pass --config FILE naming a lab.yaml") from None
    except UnicodeDecodeError:
        raise UserError(f"{file}: not a text file", "pass --config FILE naming a lab.yaml") from None
    except OSError as exc:
        raise UserError(f"{file}: cannot read ({exc.strerror})", "check the path and its permissions") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise UserError(f"{file}:{where}: not valid YAML: {problem}", "fix the syntax at that line") from None
    return parse(raw, file, results)


def parse(raw: object, file: Path, results: Path | str | None = None) -> Config:
    base = file.parent
    top = Section(file, "", raw)
    host = top.text("host", socket.gethostname())
    if not host.strip() or any(c.isspace() for c in host):
        raise UserError(
            f"{file}: host: {host!r} is not valid", "expected a host name without spaces (or leave it out: the machine's hostname)"
        )
    arches = top.text("arches", "all")
    try:
        select_arches(arches)
    except UserError as exc:
        raise UserError(f"{file}: arches: {exc.message}", exc.remedy) from None
    # default: the recipe lab ships (looked up only when needed: an installed lab without it still reads a config naming one)
    recipe = top.text("recipe", "-") if "recipe" in top.data else str(resources.images_dir() / "tiny.yaml")
    accel = top.text("accel", "auto", ACCELS)

    g = top.section("guest")
    guest = GuestConfig(
        memory_mib=g.integer("memory_mib", 256, 128, 65536),
        cpus=g.integer("cpus", 1, 1, 64),
        kernel_args=g.strings("kernel_args", ("quiet", "panic=-1", "norandmaps")),
        transparent_hugepage=g.text("transparent_hugepage", "never", axes.get("thp").values),
        snapshots=g.boolean("snapshots", True),
        scratch=g.text("scratch", "ram", tuple(x.name for x in axes.SCRATCHES)),
        kernel=_path(base, g.text("kernel", "-")) if "kernel" in g.data else None,
        modules=_path(base, g.text("modules", "-")) if "modules" in g.data else None,
    )
    g.finish()

    t = top.section("timeouts")
    multiplier = t.number("multiplier", 1.0, 0.1, 100)
    env_multiplier = os.environ.get("LAB_TIMEOUT_MULTIPLIER")
    if env_multiplier is not None:
        try:
            multiplier = float(env_multiplier)
        except ValueError:
            multiplier = -1
        if not 0.1 <= multiplier <= 100:
            raise UserError(f"LAB_TIMEOUT_MULTIPLIER={env_multiplier!r} is not valid", "expected a number from 0.1 to 100")
    timeouts = Timeouts(
        multiplier=multiplier,
        boot=t.number("boot", 60, 1, 3600),
        ssh=t.number("ssh", 30, 1, 3600),
        command=t.number("command", 120, 1, 86400),
        shutdown=t.number("shutdown", 5, 0.5, 600),
        kvm_probe=t.number("kvm_probe", 5, 1, 600),
        restore=t.number("restore", 20, 1, 600),
        lock=t.number("lock", 600, 1, 86400),
    )
    t.finish()

    p = top.section("paths")
    cache = p.text("cache", str(default_cache()))
    cache_dir = _path(base, os.environ.get("LAB_CACHE") or cache)
    results_dir = _path(base, p.text("results", "results"))
    chosen = results or os.environ.get("LAB_RESULTS")
    if chosen:
        results_dir = Path(chosen).expanduser().resolve()
    p.finish()

    q = top.section("qemu")
    qemu = QemuConfig(q.text("from", axes.DEFAULT_QEMU, axes.get("qemu").values), q.text("version", "-") if "version" in q.data else "")
    q.finish()
    if qemu.version and (qemu.origin == axes.QEMU_HOST or any(c in qemu.version for c in " =,'\"")):
        raise UserError(
            f"{file}: qemu.version: {qemu.version!r} is not valid", "a Debian version of a suite's QEMU, e.g. 1:11.1.3+ds-2~bpo13+1"
        )

    a = top.section("apt")
    apt = AptConfig(mirror=a.text("mirror", "auto"), refresh_hours=a.number("refresh_hours", 24, 0, 24 * 365))
    a.finish()

    r = top.section("run")
    run = RunConfig(
        repeat=r.integer("repeat", 5, 1, 1000),
        sizes=r.strings("sizes", ("1M",)),
        file_bytes=r.text("file_bytes", "1M"),
        libcs=r.strings("libc", variants.libcs()),
        linkages=r.strings("linkage", variants.linkages()),
        jobs=r.integer("jobs", 0, 0, 64),
        tcg_tb_size_mib=r.integer("tcg_tb_size_mib", 256, 32, 4096),
        store=_path(base, r.text("store", str(results_dir / "lab.sqlite"))),
        axes=_axes(r.section("axes")),
    )
    r.finish()
    suites = top.strings("suites", ())  # the same as run.axes.suite, as a top-level key
    if suites:
        if "suite" in run.axes:  # fmt: skip
            raise UserError(f"{file}: suites: given twice (also run.axes.suite)", "keep one of them")
        try:
            run.axes["suite"] = tuple(axes.check("suite", v) for v in suites)
        except UserError as exc:
            raise UserError(f"{file}: suites: {exc.message}", exc.remedy) from None

    c = top.section("compare")
    faults, percent = c.number("faults", 2, 0, 1e9), c.number("percent", 5, 0, 1000)
    stages: dict[str, dict[str, float]] = {}
    st = c.section("stages")
    for stage in list(st.data):
        if stage not in STAGES:
            raise UserError(f"{file}: compare.stages.{stage}: unknown stage", "stages: " + ", ".join(STAGES))
        one = st.section(stage)
        stages[stage] = {"faults": one.number("faults", faults, 0, 1e9), "percent": one.number("percent", percent, 0, 1000)}
        one.finish()
    c.finish()
    compare = CompareConfig(faults, percent, stages)

    n = top.section("nightly")
    night_dir = _path(base, n.text("dir", str(results_dir / "nightly")))
    site = _path(base, n.text("site", str(night_dir.parent / "site")))  # next to the dated directories
    nightly = NightlyConfig(
        n.text("baseline", "nightly"), n.integer("keep_runs", 14, 1, 100000), night_dir, site, n.boolean("explain", True)
    )
    n.finish()
    top.finish()
    for key, value in [("run.file_bytes", run.file_bytes)] + [("run.sizes", size) for size in run.sizes]:
        try:
            parse_size(value)
        except ValueError:
            raise UserError(f"{file}: {key}: {value!r} is not valid", "expected a size in bytes or with a K/M/G suffix, e.g. 1M") from None
    if not run.sizes:
        raise UserError(f"{file}: run.sizes: [] is not valid", "expected a non-empty list of sizes, e.g. [1M]")
    for key, values, allowed in (("run.libc", run.libcs, variants.libcs()), ("run.linkage", run.linkages, variants.linkages())):
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise UserError(f"{file}: {key}: {bad or values!r} is not valid", "expected a non-empty list of " + ", ".join(allowed))

    if apt.mirror != "auto" and not apt.mirror.startswith(("http://", "https://", "file:/")):
        raise UserError(f"{file}: apt.mirror: {apt.mirror!r} is not valid", "expected 'auto' or an http(s):// URL")
    return Config(file, host, arches, _path(base, recipe), accel, guest, timeouts, cache_dir, results_dir, apt, run, compare, nightly, qemu)
