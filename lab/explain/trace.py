"""fault-trace's JSON output (``payloads/fault_trace.c``): parsed and validated in full, or rejected.

Pure: no I/O. A trace is every page-fault sample of one process from its
``execve`` to its exit, and of every process it forked (each sample names its
pid), the mappings the process made (``mmap`` records, in time order) and its
``/proc/PID/maps`` at exit, plus the counters before the exec and at the end
(of the whole tree: the children's are added). Lost samples make a trace unusable: it is rejected, never shown as
a partial table.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from lab.errors import InfraError, LabError, UserError

SCHEMA = "lab.fault-trace"
SCHEMA_VERSION = 3  # 2: samples and mmaps name their pid (children are followed), exec_bytes; 3: in kernel
EXIT_REFUSED = 5  # perf_event_open refused
EXIT_NOEXEC = 6  # the program could not be executed
_MAPS_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) \S+ \d+\s*(.*)$")


class TraceError(InfraError):
    """fault-trace printed something that is not a complete trace, or lost samples."""


@dataclass(frozen=True)
class Sample:
    major: bool
    time: int  # CLOCK_MONOTONIC ns
    ip: int
    addr: int
    tid: int
    pid: int = 0
    in_kernel: bool = False  # the kernel took it on the process's behalf (copying to or clearing its memory)


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    pgoff: int  # file offset of ``start`` (meaningless for anonymous mappings)
    path: str  # a file, or [stack], [heap], [vdso], [vvar], //anon, "" (anonymous)
    time: int  # when it was mapped (0: from the maps at exit)
    prot: str = ""  # rwx as far as known
    pid: int = 0  # the process that mapped it

    @property
    def is_file(self) -> bool:
        return self.path.startswith("/") and not self.path.startswith("//")  # perf names anonymous memory //anon

    def __contains__(self, addr: int) -> bool:
        return self.start <= addr < self.end


@dataclass(frozen=True)
class Trace:
    argv: tuple[str, ...]
    pid: int  # the traced program; samples of other pids are its children's
    exit_status: int | None
    signal: int | None
    page_size: int
    pre_exec: int  # faults (minor + major) the child took between its fork and its execve
    rusage_minor: int  # the child's whole life, fork to exit (wait4), with every descendant's
    rusage_major: int
    exec_bytes: int  # argument and environment strings execve copied onto the new stack
    child_execs: int  # execve calls of the program's descendants (each also faults unsampled)
    samples: tuple[Sample, ...]
    mmaps: tuple[Mapping, ...]  # time order
    exit_maps: tuple[Mapping, ...]
    stdout: str

    def kernel_ips(self) -> set[int]:
        return {s.ip for s in self.samples if s.in_kernel}

    @property
    def exec_bound(self) -> int:
        """The most faults execve can take without a perf event: one per page of the strings it copies (get_user_pages
        on the new stack), plus the page they start in and one for the arguments' pointer block; as much again for
        every descendant's execve (their counters reach the program's rusage; children inherit its environment)."""
        return (1 + self.child_execs) * (-(-self.exec_bytes // self.page_size) + 2)

    @property
    def unsampled(self) -> int:
        """Faults with no perf event: those the kernel took through get_user_pages while building the process."""
        return self.rusage_minor + self.rusage_major - self.pre_exec - len(self.samples)


def _fail(what: str) -> TraceError:
    return TraceError(f"fault-trace output rejected: {what}", "rebuild the tracer (lab payloads build) and run again")


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], nullable: bool = False) -> Any:
    value = obj.get(key)
    if value is None and nullable and key in obj:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _fail(f"{key} is missing or of the wrong type")
    return value


def parse_maps(text: str) -> tuple[Mapping, ...]:
    """``/proc/PID/maps`` text as mappings."""
    out = []
    for line in text.splitlines():
        m = _MAPS_LINE.match(line)
        if m:
            start, end, perms, off, path = m.groups()
            out.append(Mapping(int(start, 16), int(end, 16), int(off, 16), path.strip(), 0, perms[:3].replace("-", "")))
    return tuple(out)


def _prot(bits: int) -> str:
    return "".join(c for bit, c in ((1, "r"), (2, "w"), (4, "x")) if bits & bit)


def parse(text: str) -> Trace:
    """Parse one fault-trace run's stdout."""
    try:
        data = json.loads(text.strip())
    except json.JSONDecodeError as exc:
        raise _fail(f"not JSON ({exc.msg} at column {exc.colno}); truncated or garbled") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or data.get("schema_version") != SCHEMA_VERSION:
        raise _fail(f"not a {SCHEMA} v{SCHEMA_VERSION} object")
    if data.get("complete") is not True:
        raise _fail("the 'complete' marker is missing")
    lost = _get(data, "lost", int)
    if lost:
        raise TraceError(
            f"fault-trace lost {lost} sample(s): the table would not add up",
            "run again with fewer or smaller buffers (--size); a loaded guest drains its ring buffer late",
        )
    pre, ru = _get(data, "pre_exec", dict), _get(data, "rusage", dict)
    if _get(pre, "minflt", int) < 0:
        raise _fail("the child never reported its counters before exec")
    samples = []
    for s in _get(data, "samples", list):
        if not (isinstance(s, list) and len(s) == 7 and all(isinstance(v, int) for v in s)):
            raise _fail(f"sample {s!r} is not [major, time, ip, addr, tid, pid, in kernel]")
        samples.append(Sample(bool(s[0]), s[1], s[2], s[3], s[4], s[5], bool(s[6])))
    samples.sort(key=lambda s: s.time)
    mmaps = []
    for m in _get(data, "mmaps", list):
        if not isinstance(m, dict):
            raise _fail("an mmap record is not an object")
        start = _get(m, "start", int)
        mmaps.append(
            Mapping(
                start,
                start + _get(m, "len", int),
                _get(m, "pgoff", int),
                _get(m, "path", str),
                _get(m, "time", int),
                _prot(_get(m, "prot", int)),
                _get(m, "pid", int),
            )
        )
    trace = Trace(
        argv=tuple(_get(data, "argv", list)),
        pid=_get(data, "pid", int),
        exit_status=_get(data, "exit_status", int, nullable=True),
        signal=_get(data, "signal", int, nullable=True),
        page_size=_get(data, "page_size", int),
        pre_exec=pre["minflt"] + _get(pre, "majflt", int),
        rusage_minor=_get(ru, "minflt", int),
        rusage_major=_get(ru, "majflt", int),
        exec_bytes=_get(data, "exec_bytes", int),
        child_execs=_get(data, "child_execs", int),
        samples=tuple(samples),
        mmaps=tuple(sorted((m for m in mmaps if m.pid == data["pid"]), key=lambda m: m.time)),  # the program's own
        exit_maps=parse_maps(_get(data, "maps_at_exit", str)),
        stdout=_get(data, "stdout", str),
    )
    if trace.unsampled < 0:
        raise _fail(f"{len(samples)} samples but the process's own counters say {trace.unsampled + len(samples)} since exec")
    return trace


def refusal(status: int, stderr: str, program: str) -> LabError | None:
    """The error for a tracer that could not trace (None when it ran): refused by the kernel, or no such program."""
    line = next((ln for ln in stderr.splitlines() if ln.startswith("fault-trace:")), stderr.strip()[:200])
    if status == EXIT_REFUSED:
        return InfraError(
            line,
            "the guest kernel needs CONFIG_PERF_EVENTS and root (or kernel.perf_event_paranoid <= 1); use an image whose kernel has them",
        )
    if status == EXIT_NOEXEC:
        return UserError(
            f"cannot run {program} in the guest: {line.split(': ')[-1]}",
            "name a program that exists in the image, or upload one with --put",
        )
    if status != 0:
        return InfraError(f"fault-trace failed (exit status {status}): {line}", "run with -v; rebuild the tracer with lab payloads build")
    return None
