"""The account of a traced process: every fault to a stage, an object, a section and a function, adding up to rusage.

Pure: a :class:`~lab.explain.trace.Trace`, a way to read the guest's ELF
objects, and (for the fault probe) its stage timestamps in; an
:class:`Account` out. The lines of an account add up to the process's own
rusage count exactly: the sampled faults, the faults the kernel took while
building the process without a perf event (``unsampled``: get_user_pages during
exec, computed as rusage since exec minus samples, never negative) and the
faults the launcher's forked child took before its ``execve`` (``pre_exec``:
not the program's, shown apart).

Objects are named by role so that cells of other libcs and arches line up in a
diff: ``exe`` (the traced program), ``ld.so`` (its interpreter; for musl also its
libc), ``libc.so`` (glibc's libc.so.6), other libraries by file name,
``file:PATH`` for other files, and ``[stack]``, ``[heap]``, ``[anon]``, ``[vdso]``,
``[vvar]`` as the kernel names them. An address inside an object's loaded
segments belongs to it even where the mapping is anonymous (``.bss``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from collections.abc import Mapping as Map
from dataclasses import dataclass, field

from lab.explain.objects import ElfObject, load_bias
from lab.explain.trace import Mapping, Sample, Trace

EXEC_SETUP = "[exec set-up]"  # the unsampled faults: the kernel building the process (get_user_pages)
CHILDREN = "[child processes]"  # faults of processes the program forked (followed by the tracer), a row of their own
EXIT_STAGE = "exit"  # after the probe's last stage: its output and exit
RUN_STAGE = "run"  # the stage of every fault of a program without stages


@dataclass(frozen=True)
class Fault:
    major: bool
    stage: str
    object: str
    section: str
    function: str
    kernel: bool  # taken in the kernel on the process's behalf
    region: str  # the mapping it landed in: "start-end path"
    page: int = -1  # the page it faulted (address // page size; -1: not recorded, older stored accounts)


@dataclass(frozen=True)
class ObjectInfo:
    label: str
    path: str
    symbols: str  # where function names came from
    facts: dict[str, object]


@dataclass(frozen=True)
class Account:
    cell: str  # arch:variant or arch:program
    argv: tuple[str, ...]
    faults: tuple[Fault, ...]
    unsampled: int
    pre_exec: int
    rusage_total: int  # the process's own count, fork to exit
    stages: tuple[str, ...]  # in order, ending with exit when the program has stages
    objects: tuple[ObjectInfo, ...]
    probe_stages: dict[str, tuple[int, int]] = field(default_factory=dict)  # the probe's own deltas in the traced run
    notes: tuple[str, ...] = ()
    exec_bound: int | None = None  # the most faults exec can take unsampled (None: an account stored before it was known)
    page_size: int | None = None  # the guest's, as the tracer saw it

    def stage_totals(self) -> dict[str, tuple[int, int]]:
        """stage → (minor, major) since exec; the unsampled exec set-up belongs to the first stage."""
        out = {s: [0, 0] for s in self.stages}
        for f in self.faults:
            out[f.stage][f.major] += 1
        if self.stages:
            out[self.stages[0]][0] += self.unsampled
        return {s: (v[0], v[1]) for s, v in out.items()}

    def rows(self, stage: str | None = None) -> list[tuple[str, str, int, int]]:
        """(object, section, minor, major), most faults first; the exec set-up is a row of its own."""
        counts: Counter[tuple[str, str, bool]] = Counter()
        for f in self.faults:
            if stage is None or f.stage == stage:
                counts[(f.object, f.section, f.major)] += 1
        keys = dict.fromkeys((o, s) for o, s, _ in counts)
        rows = [(o, s, counts[(o, s, False)], counts[(o, s, True)]) for o, s in keys]
        if self.unsampled and (stage is None or (self.stages and stage == self.stages[0])):
            rows.append((EXEC_SETUP, "-", self.unsampled, 0))
        return sorted(rows, key=lambda r: (-(r[2] + r[3]), r[0], r[1]))

    def functions(self, stage: str | None = None, top: int = 10) -> list[tuple[str, int]]:
        counts = Counter(f.function for f in self.faults if stage is None or f.stage == stage)
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]

    def total(self, stage: str | None = None) -> int:
        """Faults since exec (of one stage, or all)."""
        return sum(r[2] + r[3] for r in self.rows(stage))


Loader = Callable[[str], ElfObject | None]  # guest path -> its object (None: not ELF, or not available)
Realpath = Callable[[str], str]  # guest path -> the path the kernel names it by (symlinks resolved)
KernelNames = Map[int, str]  # kernel IP -> the function it is in (fault-trace --kernel-symbols)


def _label(path: str, exe: str | None, interp: str | None) -> str:
    if path == exe:
        return "exe"
    if path == interp:
        return "ld.so"
    base = os.path.basename(path)
    return "libc.so" if base.startswith("libc.so") else base


def _region_label(m: Mapping | None) -> str:
    if m is None:
        return "[unmapped]"
    if m.is_file:
        return f"file:{m.path}"
    if m.path in ("", "//anon"):
        return "[anon]"
    return m.path if m.path.startswith("[") else f"[{m.path}]"


@dataclass
class _Loaded:
    label: str
    obj: ElfObject
    bias: int


class _Resolver:
    def __init__(self, trace: Trace, load: Loader, exe_hint: str | None, realpath: Realpath, kernel: KernelNames) -> None:
        self.trace = trace
        self.kernel = kernel
        self.mmaps = list(reversed(trace.mmaps))  # latest first
        files = [m for m in (*trace.mmaps, *trace.exit_maps) if m.is_file]
        exe = exe_hint if exe_hint and any(m.path == exe_hint for m in files) else (files[0].path if files else None)
        objs: dict[str, ElfObject] = {}
        for m in files:
            if m.path not in objs:
                o = load(m.path)
                if o is not None:
                    objs[m.path] = o
        named = objs[exe].interpreter if exe in objs else None
        interp = realpath(named) if named else None
        self.loaded: list[_Loaded] = []
        for path, o in objs.items():
            first = min((m for m in files if m.path == path), key=lambda m: m.pgoff)
            bias = load_bias(o, first.start, first.pgoff, trace.page_size)
            if bias is not None:
                self.loaded.append(_Loaded(_label(path, exe, interp), o, bias))

    def mapping(self, addr: int, time: int) -> Mapping | None:
        for m in self.mmaps:
            if m.time <= time and addr in m:
                return m
        return next((m for m in self.trace.exit_maps if addr in m), None)

    def object_at(self, addr: int) -> _Loaded | None:
        return next((lo for lo in self.loaded if lo.obj.covers(addr - lo.bias)), None)

    def where(self, s: Sample) -> tuple[str, str, str]:
        m = self.mapping(s.addr, s.time)
        lo = self.object_at(s.addr)
        region = f"{m.start:x}-{m.end:x} {m.path}" if m else "?"
        if lo is not None:
            return lo.label, lo.obj.section_at(s.addr - lo.bias) or "(no section)", region
        return _region_label(m), "-", region

    def function(self, s: Sample) -> str:
        if s.in_kernel:
            return f"kernel:{self.kernel.get(s.ip, '?')}"
        lo = self.object_at(s.ip)
        if lo is None:
            return f"?@{_region_label(self.mapping(s.ip, s.time))}"
        return f"{lo.obj.function_at(s.ip - lo.bias) or '?'}@{lo.label}"


def attribute(
    cell: str,
    trace: Trace,
    load: Loader,
    stage_ends: Sequence[tuple[str, int]] = (),
    exe: str | None = None,
    probe_stages: dict[str, tuple[int, int]] | None = None,
    realpath: Realpath = lambda p: p,
    kernel: KernelNames | None = None,
) -> Account:
    """Attribute every sample of ``trace``; ``stage_ends`` are the probe's (stage, time its counters were read)."""
    r = _Resolver(trace, load, exe, realpath, kernel or {})
    stages = (*tuple(name for name, _ in stage_ends), EXIT_STAGE) if stage_ends else (RUN_STAGE,)
    faults = []
    for s in trace.samples:
        stage = next((name for name, t in stage_ends if s.time < t), EXIT_STAGE) if stage_ends else RUN_STAGE
        if s.pid != trace.pid:  # a child's: its address space is not the program's (it may have exec'd anything)
            faults.append(Fault(s.major, stage, CHILDREN, f"pid {s.pid}", "?", s.in_kernel, ""))
            continue
        obj, section, region = r.where(s)
        faults.append(Fault(s.major, stage, obj, section, r.function(s), s.in_kernel, region, s.addr // trace.page_size))
    objects = tuple(
        ObjectInfo(lo.label, lo.obj.path, lo.obj.symbol_source, lo.obj.facts.as_dict()) for lo in sorted(r.loaded, key=lambda lo: lo.label)
    )
    return Account(
        cell=cell,
        argv=trace.argv,
        faults=tuple(faults),
        unsampled=trace.unsampled,
        pre_exec=trace.pre_exec,
        rusage_total=trace.rusage_minor + trace.rusage_major,
        stages=stages,
        objects=objects,
        probe_stages=dict(probe_stages or {}),
        exec_bound=trace.exec_bound,
        page_size=trace.page_size,
    )


@dataclass(frozen=True)
class DiffRow:
    object: str
    section: str
    a: int
    b: int
    function: str = ""  # with diff(..., functions=True): the faulting instruction's function

    @property
    def delta(self) -> int:
        return self.b - self.a


def _counts(acc: Account, stage: str | None, functions: bool) -> Counter[tuple[str, str, str]]:
    if not functions:
        return Counter({(o, s, ""): mi + ma for o, s, mi, ma in acc.rows(stage)})
    counts = Counter((f.object, f.section, f.function) for f in acc.faults if stage is None or f.stage == stage)
    if acc.unsampled and (stage is None or (acc.stages and stage == acc.stages[0])):
        counts[(EXEC_SETUP, "-", "-")] += acc.unsampled
    return counts


def diff(a: Account, b: Account, stage: str | None = None, functions: bool = False) -> list[DiffRow]:
    """Object by object and section by section (``functions``: and function by function), ``b`` minus ``a``,
    the largest differences first."""
    count_a, count_b = _counts(a, stage, functions), _counts(b, stage, functions)
    keys = dict.fromkeys([*count_a, *count_b])
    rows = [DiffRow(o, s, count_a.get((o, s, f), 0), count_b.get((o, s, f), 0), f) for o, s, f in keys]
    return sorted(rows, key=lambda r: (-abs(r.delta), r.object, r.section, r.function))
