"""The pieces of a run: the groups (one guest each), what a group needs before it boots, and a cell's record."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from lab.arches import Arch
from lab.config import Config
from lab.explain.sources import GuestFiles
from lab.guests.boot import Booted
from lab.guests.images import Image
from lab.measure import libc
from lab.measure.plan import Plan
from lab.payloads.build import Payload
from lab.payloads.probe import SCHEMA_VERSION, ProbeResult
from lab.payloads.variants import Variant
from lab.results.store import Cell, CellError, Sample
from lab.spec import GuestSpec

log = __import__("logging").getLogger(__name__)


@dataclass(frozen=True)
class Group:
    """The cells one guest measures: the guest (lab.spec.GuestSpec: an arch at one boot point of lab.axes)."""

    spec: GuestSpec
    label: str  # for progress lines: the arch, plus the boot axes' values where a run spans several

    @property
    def arch(self) -> Arch:
        return self.spec.arch

    @property
    def slug(self) -> str:
        return self.label.replace("/", "-")

    @property
    def suite(self) -> str:
        return self.spec.suite

    @property
    def qemu(self) -> str:
        return self.spec.qemu  # the QEMU's origin (qemu.from, or the qemu axis's value)

    def config(self, cfg: Config) -> Config:
        """``cfg`` as this group's guest boots under it: the scratch device is a guest setting."""
        return replace(cfg, guest=replace(cfg.guest, scratch=self.spec.scratch))


def groups(plan: Plan) -> list[Group]:
    return [Group(g, label) for g, label in zip(plan.groups(), plan.labels(), strict=True)]


@dataclass(frozen=True)
class Prepared:
    """What a group's guest needs, built before it boots."""

    image: Image
    payloads: dict[str, Payload]
    reseed: Path | None  # the arch's reseed helper: restored guests need it (lab.guests.boot; None: boot cold)
    runner: Path  # the arch's lab-runner (payloads/runner.c): it runs each round in the guest (lab.measure.batch)
    tracer: Payload | None = None  # with --explain
    files: GuestFiles | None = None  # the guest's files on the host, for attribution (with --explain)


@dataclass
class ArchOutcome:
    arch: str
    cells: list[tuple[Cell, list[Sample]]] = field(default_factory=list)
    errors: list[CellError] = field(default_factory=list)


@dataclass(frozen=True)
class Summary:
    run_id: str
    run_dir: Path
    status: str
    cells: int
    errors: int
    seconds: float


def thp_mode(text: str) -> str:
    """The mode the probe read (``always madvise [never]``); ``none``: the kernel has no THP (no control file)."""
    return text[text.index("[") + 1 : text.index("]")] if "[" in text and "]" in text else (text or "none")


def kernel_source(manifest: dict[str, object]) -> str:
    """Where an image's kernel came from: ``SUITE PACKAGE VERSION`` (Debian's), or ``file sha256:DIGEST``."""
    own, pkg = manifest.get("kernel_file") or {}, manifest.get("kernel_package") or {}
    if isinstance(own, dict) and own:
        return f"file sha256:{own.get('sha256', '')}"
    return f"{manifest.get('kernel_suite', '')} {pkg.get('name', '')} {pkg.get('version', '')}" if isinstance(pkg, dict) else ""


def make_cell(
    arch: Arch,
    v: Variant,
    size: int,
    image: Image,
    payload: Payload,
    b: Booted,
    results: list[ProbeResult],
    attempts: int,
    musl: str | None,
) -> Cell:
    f = results[0].facts
    run = libc.run_version(v, f.libc_version_run, f.libc_version_build, musl)
    problem = libc.mismatch(v.libc, f.libc_version_build, run, libc.image_versions(image.manifest))
    if problem:
        log.warning("%s %s is not one libc: %s", arch.name, v.name, problem)
    return Cell(
        arch=arch.name,
        variant=v.name,
        libc=v.libc,
        linkage=v.linkage,
        buffer_size=size,
        libc_version_build=f.libc_version_build,
        libc_version_run=run,
        toolchain=f.toolchain,
        flags=f.flags,
        image_key=image.key,
        payload_digest=payload.digest,
        kernel_release=f.kernel,
        page_size=f.page_size,
        thp=thp_mode(f.thp),
        qemu_version=b.info.qemu_version,
        qemu_origin=b.info.qemu_origin,
        scratch=b.info.scratch,
        kernel_source=kernel_source(image.manifest),
        file_pages=results[0].file.pages if results[0].file else 0,
        word_bits=f.word_bits or 0,
        accel=b.info.accel,
        probe_schema=SCHEMA_VERSION,
        attempts=attempts,
        boot=b.info.boot,
    )
