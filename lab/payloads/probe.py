"""The fault probe's JSON output: parsed and validated in full, or rejected with the reason.

Pure: no I/O. Truncated, garbled, inconsistent or wrong-schema output raises
:class:`ProbeOutputError`; nothing is ever half-parsed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lab.errors import InfraError

SCHEMA = "lab.fault-probe"
SCHEMA_VERSION = 2  # 2: musl's re-exec child shares its parent's memory on every arch (posix_spawn); facts.word_bits
CORE_STAGES = ("entry", "overhead", "malloc", "touch1", "touch2")
FILE_STAGES = ("file_map", "file_read")


class ProbeOutputError(InfraError):
    """The probe printed something that is not a complete, consistent result."""


@dataclass(frozen=True)
class Stage:
    name: str
    minflt: int  # cumulative since the measured process's execve
    majflt: int
    delta_minflt: int  # since the previous stage
    delta_majflt: int
    ns: int  # elapsed since the previous stage
    t: int = 0  # CLOCK_MONOTONIC ns just before the counters were read (0 from probes older than fault-trace)


@dataclass(frozen=True)
class Facts:
    arch: str
    kernel: str
    page_size: int
    thp: str
    libc: str
    libc_version_run: str | None
    libc_version_build: str
    linkage: str
    pie: bool
    interpreter: str | None
    toolchain: str
    flags: str
    variant: str
    buffer_size: int
    buffer_page_offset: int | None = None  # where the buffer starts within its first page (None: older probes)
    word_bits: int | None = None  # its pointer width: 32 for an i386 or armhf userland (None: older probes)

    @property
    def buffer_pages(self) -> int | None:
        """How many pages the buffer spans (one more than size/page when it does not start a page)."""
        if self.buffer_page_offset is None:
            return None
        return -(-(self.buffer_page_offset + self.buffer_size) // self.page_size)


@dataclass(frozen=True)
class FileInfo:
    path: str
    pages: int
    resident_before: int


@dataclass(frozen=True)
class ProbeResult:
    reexec: bool
    file_order: str | None
    facts: Facts
    file: FileInfo | None
    stages: tuple[Stage, ...]
    file_cache: str | None = None  # cold (evicted first) | warm (read in first); None without --file

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)


def _fail(what: str) -> ProbeOutputError:
    return ProbeOutputError(f"probe output rejected: {what}", "see the raw output kept with the run; rebuild the payload if it is stale")


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, nullable: bool = False) -> Any:
    if key not in obj:
        raise _fail(f"{where}.{key} is missing")
    value = obj[key]
    if value is None and nullable:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _fail(f"{where}.{key} is {value!r}, of the wrong type")
    return value


def parse(text: str) -> ProbeResult:
    """Parse one probe run's stdout."""
    stripped = text.strip()
    if not stripped:
        raise _fail("empty output")
    if "\n" in stripped:
        raise _fail(f"{len(stripped.splitlines())} lines where one JSON object was expected")
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise _fail(f"not JSON ({exc.msg} at column {exc.colno}); truncated or garbled") from None
    if not isinstance(data, dict):
        raise _fail("top level is not an object")
    if data.get("schema") != SCHEMA or data.get("schema_version") != SCHEMA_VERSION:
        raise _fail(f"schema {data.get('schema')!r} v{data.get('schema_version')!r}, expected {SCHEMA!r} v{SCHEMA_VERSION}")
    if data.get("complete") is not True:
        raise _fail("the 'complete' marker is missing")

    mode = _field(data, "mode", dict, "")
    f = _field(data, "facts", dict, "")
    facts = Facts(
        arch=_field(f, "arch", str, "facts"),
        kernel=_field(f, "kernel", str, "facts"),
        page_size=_field(f, "page_size", int, "facts"),
        thp=_field(f, "thp", str, "facts"),
        libc=_field(f, "libc", str, "facts"),
        libc_version_run=_field(f, "libc_version_run", str, "facts", nullable=True),
        libc_version_build=_field(f, "libc_version_build", str, "facts"),
        linkage=_field(f, "linkage", str, "facts"),
        pie=_field(f, "pie", bool, "facts"),
        interpreter=_field(f, "interpreter", str, "facts", nullable=True),
        toolchain=_field(f, "toolchain", str, "facts"),
        flags=_field(f, "flags", str, "facts"),
        variant=_field(f, "variant", str, "facts"),
        buffer_size=_field(f, "buffer_size", int, "facts"),
        buffer_page_offset=_field(f, "buffer_page_offset", int, "facts") if "buffer_page_offset" in f else None,
        word_bits=_field(f, "word_bits", int, "facts") if "word_bits" in f else None,
    )
    if facts.page_size <= 0 or facts.page_size & (facts.page_size - 1):
        raise _fail(f"facts.page_size {facts.page_size} is not a power of two")

    raw_file = _field(data, "file", dict, "", nullable=True)
    file = None
    if raw_file is not None:
        file = FileInfo(
            _field(raw_file, "path", str, "file"), _field(raw_file, "pages", int, "file"), _field(raw_file, "resident_before", int, "file")
        )

    raw_stages = _field(data, "stages", list, "")
    expected = CORE_STAGES + (FILE_STAGES if file else ())
    names = tuple(s.get("name") if isinstance(s, dict) else None for s in raw_stages)
    if names != expected:
        raise _fail(f"stages {list(names)}, expected {list(expected)}")
    stages: list[Stage] = []
    for i, s in enumerate(raw_stages):
        where = f"stages[{i}]"
        stage = Stage(
            name=s["name"],
            minflt=_field(s, "minflt", int, where),
            majflt=_field(s, "majflt", int, where),
            delta_minflt=_field(s, "delta_minflt", int, where),
            delta_majflt=_field(s, "delta_majflt", int, where),
            ns=_field(s, "ns", int, where),
            t=_field(s, "t", int, where) if "t" in s else 0,
        )
        prev = stages[-1] if stages else Stage("", 0, 0, 0, 0, 0)
        if min(stage.minflt, stage.majflt, stage.delta_minflt, stage.delta_majflt, stage.ns) < 0:
            raise _fail(f"{where} ({stage.name}) has a negative count")
        if (stage.minflt - prev.minflt, stage.majflt - prev.majflt) != (stage.delta_minflt, stage.delta_majflt):
            raise _fail(f"{where} ({stage.name}) deltas do not match its cumulative counts")
        stages.append(stage)
    return ProbeResult(
        reexec=_field(mode, "reexec", bool, "mode"),
        file_order=_field(mode, "file_order", str, "mode", nullable=True),
        facts=facts,
        file=file,
        stages=tuple(stages),
        file_cache=str(mode["file_cache"]) if isinstance(mode.get("file_cache"), str) else None,
    )
