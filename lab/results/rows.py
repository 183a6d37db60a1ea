"""The store's rows as typed, frozen values: a run, a cell (identity + environment), a sample, a cell's error."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunMeta:
    id: str
    started: float
    host: str
    pid: int
    lab_version: str
    git_revision: str
    config_digest: str
    argv: str
    repeat: int
    run_dir: str
    status: str = "running"
    ended: float | None = None
    part_of: str = ""  # the fleet run this host's run was imported into ("" for a run of its own)


@dataclass(frozen=True)
class Cell:
    arch: str
    variant: str
    libc: str
    linkage: str
    buffer_size: int
    libc_version_build: str
    libc_version_run: str | None
    toolchain: str
    flags: str
    image_key: str
    payload_digest: str
    kernel_release: str
    page_size: int
    thp: str
    qemu_version: str
    accel: str
    probe_schema: int
    attempts: int
    axes: str = ""  # every axis's value (lab.axes.identity: absolute since store v8), part of the cell's identity
    boot: str = ""  # how its guest came up: cold | restored | cold (why not restored); not part of comparisons
    host: str = ""  # the lab host that measured it (lab.yaml's host; a fleet's inventory name)
    host_cpu: str = ""  # that host's CPU model, for KVM cells (a TCG cell's faults do not depend on it)
    qemu_origin: str = ""  # where its QEMU came from: host, or SUITE PACKAGE-VERSION (lab.guests.emulator; store v6)
    scratch: str = ""  # the block device under its test file: ram | disk (lab.axes.SCRATCHES; store v7)
    kernel_source: str = ""  # its kernel: SUITE PACKAGE VERSION (Debian's) or file sha256:DIGEST (--kernel; store v8)
    file_pages: int = 0  # pages of the test file the file stages used, at its page size (0: not recorded; store v8)
    word_bits: int = 0  # the probe's pointer width: 32 for i386 and armhf userlands (0: not recorded; store v9)


@dataclass(frozen=True)
class Sample:
    repeat: int
    stage: str
    minflt: int
    majflt: int
    delta_minflt: int
    delta_majflt: int
    ns: int


@dataclass(frozen=True)
class CellError:
    arch: str
    variant: str
    buffer_size: int
    stage: str
    message: str
    evidence: str
    attempts: int
    axes: str = ""
    host: str = ""  # the lab host that tried it (a fleet host that never answered: stage "host")


@dataclass(frozen=True)
class Nightly:
    """A nightly's record (store v10): its run, dated directory, the baseline it was judged against, and the verdict."""

    run_id: str
    created: float
    dir: str
    baseline: str
    baseline_run: str
    exit_code: int
    comparison: str  # lab.results.compare.to_json, as judged that night
    explained: str  # JSON: lab.results.regressions.to_json of its regressions
