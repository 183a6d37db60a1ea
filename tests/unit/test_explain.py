"""lab explain's pure parts: the trace parser, attribution, checks, rendering, and bad input at the CLI."""

import json
import struct
from pathlib import Path

import pytest

from lab import arches, cli
from lab.errors import InfraError, UserError
from lab.explain import account, checks, render, trace
from lab.explain.objects import ElfObject, Facts, Section, Segment, load_bias
from lab.measure import engine, programs, tracing

REPO = Path(__file__).resolve().parents[2]
KERNEL_IP = 0xFFFFFFFF81000010
PAGE = 4096
EXE = "/tmp/lab-payloads/glibc-static"


def raw_trace(samples: list[list[int]], rusage: int, pre: int = 10, lost: int = 0, stdout: str = "") -> str:
    """A fault-trace document: an executable at 0x400000 (text, data+bss), a stack, a 4-page anonymous buffer, a file."""
    return json.dumps(
        {
            "schema": "lab.fault-trace",
            "schema_version": 3,
            "argv": [EXE, "--size", "16K"],
            "pid": 7,
            "exit_status": 0,
            "signal": None,
            "page_size": PAGE,
            "clock": "monotonic",
            "pre_exec": {"minflt": pre, "majflt": 0},
            "exec_bytes": 200,
            "orphans": 0,
            "child_execs": 0,
            "rusage": {"minflt": rusage, "majflt": 0},
            "lost": lost,
            # [major, time, ip, addr, tid, pid, in kernel]: these tests' kernel is x86_64's, at 1 << 63 and up
            "samples": [[*smp, *([7] if len(smp) == 5 else []), int(smp[2] >= KERNEL)][:7] for smp in samples],
            "mmaps": [
                {"time": 1, "pid": 7, "start": 0x7FFF0000, "len": 0x10000, "pgoff": 0, "prot": 3, "flags": 2, "path": "[stack]"},
                {"time": 2, "pid": 7, "start": 0x400000, "len": 0x2000, "pgoff": 0, "prot": 5, "flags": 2, "path": EXE},
                {"time": 3, "pid": 7, "start": 0x402000, "len": 0x1000, "pgoff": 0x2000, "prot": 3, "flags": 2, "path": EXE},
                {"time": 4, "pid": 7, "start": 0x403000, "len": 0x1000, "pgoff": 0, "prot": 3, "flags": 2, "path": "//anon"},
                {"time": 50, "pid": 7, "start": 0x10000000, "len": 4 * PAGE, "pgoff": 0, "prot": 3, "flags": 34, "path": "//anon"},
                {
                    "time": 80,
                    "pid": 7,
                    "start": 0x20000000,
                    "len": 2 * PAGE,
                    "pgoff": 0,
                    "prot": 1,
                    "flags": 2,
                    "path": "/scratch/probe.dat",
                },
            ],
            "maps_at_exit": "7fff0000-80000000 rw-p 00000000 00:00 0                          [stack]\n",
            "stdout": stdout,
            "complete": True,
        }
    )


def exe_object() -> ElfObject:
    """The executable: text at 0x400000, .data at 0x402000 (one page in the file), .bss up to 0x404000."""
    rows = ((0x400100, 0x400200, "_start"), (0x400200, 0x400800, "main"), (0x400800, 0x400900, "touch"))
    return ElfObject(
        path=EXE,
        machine="EM_X86_64",
        build_id=None,
        segments=(Segment(0x400000, 0x2000, 0, 0x2000, "RX"), Segment(0x402000, 0x2000, 0x2000, 0x800, "RW")),
        sections=(Section(".text", 0x400100, 0x401000), Section(".data", 0x402000, 0x402800), Section(".bss", 0x402800, 0x404000)),
        facts=Facts(3, {".rela.plt": 3}, 2, 0, 0x1800, 0x800),
        symbol_source="symtab",
        _starts=tuple(r[0] for r in rows),
        _symbols=rows,
    )


def loader(path: str) -> ElfObject | None:
    return exe_object() if path == EXE else None


# stage ends (the probe's clock reads): entry < 40 <= overhead < 45 <= malloc < 60 <= touch1 < 70; exit after
STAGES = [("entry", 40), ("overhead", 45), ("malloc", 60), ("touch1", 70)]
KERNEL = 1 << 63  # where x86_64's kernel addresses start (raw_trace marks samples there as the kernel's)
SAMPLES = [
    [0, 10, 0x400100, 0x400100, 7],  # entry: _start's text page
    [0, 11, KERNEL_IP, 0x402800, 7],  # entry: the kernel zeroing .bss's first page
    [0, 12, 0x400210, 0x7FFFF000, 7],  # entry: main's stack
    [0, 13, 0x400220, 0x403010, 7],  # entry: .bss in the anonymous part of the data segment
    [0, 55, 0x400230, 0x10000000, 7],  # malloc: the buffer's header page
    [0, 61, 0x400810, 0x10001000, 7],  # touch1 x3
    [0, 62, 0x400810, 0x10002000, 7],
    [0, 63, 0x400810, 0x10003000, 7],
    [1, 90, 0x400240, 0x20000000, 7],  # exit stage: a major fault in the file
]


def test_attribution_names_object_section_function_and_stage() -> None:
    t = trace.parse(raw_trace(SAMPLES, rusage=10 + 9 + 2))
    assert t.kernel_ips() == {KERNEL_IP}
    acc = account.attribute("x86_64:test", t, loader, STAGES, exe=EXE, kernel={KERNEL_IP: "clear_user"})
    got = [(f.stage, f.object, f.section, f.function, f.major) for f in acc.faults]
    assert got == [
        ("entry", "exe", ".text", "_start@exe", False),
        ("entry", "exe", ".bss", "kernel:clear_user", False),
        ("entry", "[stack]", "-", "main@exe", False),
        ("entry", "exe", ".bss", "main@exe", False),
        ("malloc", "[anon]", "-", "main@exe", False),
        ("touch1", "[anon]", "-", "touch@exe", False),
        ("touch1", "[anon]", "-", "touch@exe", False),
        ("touch1", "[anon]", "-", "touch@exe", False),
        ("exit", "file:/scratch/probe.dat", "-", "main@exe", True),
    ]
    assert acc.unsampled == 2 and acc.pre_exec == 10
    # the unsampled exec set-up belongs to the first stage, as a line of its own
    assert acc.stage_totals() == {"entry": (6, 0), "overhead": (0, 0), "malloc": (1, 0), "touch1": (3, 0), "exit": (0, 1)}
    assert (account.EXEC_SETUP, "-", 2, 0) in acc.rows("entry")
    assert acc.rows("touch1") == [("[anon]", "-", 3, 0)]
    assert acc.functions("touch1") == [("touch@exe", 3)]
    assert acc.total() == 11


def test_a_mapping_is_the_one_in_place_when_the_fault_happened() -> None:
    """An address reused by a later mapping belongs to the mapping that existed at the fault's time."""
    samples = [[0, 60, 0x400810, 0x10000000, 7], [0, 85, 0x400810, 0x10000000, 7]]
    doc = json.loads(raw_trace(samples, rusage=10 + 2))
    doc["mmaps"].append({"time": 84, "pid": 7, "start": 0x10000000, "len": PAGE, "pgoff": 0, "prot": 1, "flags": 2, "path": "/other"})
    acc = account.attribute("c", trace.parse(json.dumps(doc)), loader)
    assert [f.object for f in acc.faults] == ["[anon]", "file:/other"]


def test_lost_samples_and_impossible_counts_are_errors_never_a_partial_table() -> None:
    with pytest.raises(trace.TraceError, match="lost 3 sample"):
        trace.parse(raw_trace(SAMPLES, rusage=30, lost=3))
    with pytest.raises(trace.TraceError, match="9 samples but the process's own counters say 8"):
        trace.parse(raw_trace(SAMPLES, rusage=18))  # 10 before exec + 8 < 9 samples
    with pytest.raises(trace.TraceError, match="truncated"):
        trace.parse(raw_trace(SAMPLES, rusage=30)[:200])
    doc = json.loads(raw_trace(SAMPLES, rusage=30))
    del doc["complete"]
    with pytest.raises(trace.TraceError, match="complete"):
        trace.parse(json.dumps(doc))


def test_refusals_map_to_one_line_errors_with_remedies() -> None:
    refused = trace.refusal(5, "fault-trace: perf_event_open refused: Permission denied (kernel.perf_event_paranoid=3)\n", "/x")
    assert isinstance(refused, InfraError) and "perf_event_paranoid=3" in refused.message and "CONFIG_PERF_EVENTS" in refused.remedy
    missing = trace.refusal(6, "fault-trace: cannot execute /bin/nope: No such file or directory\n", "/bin/nope")
    assert isinstance(missing, UserError) and missing.message == "cannot run /bin/nope in the guest: No such file or directory"
    assert trace.refusal(0, "", "/x") is None


def test_checks_pass_on_an_account_that_adds_up_and_agrees() -> None:
    probe = {"entry": (16, 0), "overhead": (0, 0), "malloc": (1, 0), "touch1": (3, 0)}
    acc = account.attribute("c", trace.parse(raw_trace(SAMPLES, rusage=21)), loader, STAGES, exe=EXE, probe_stages=probe)
    untraced = {"entry": (7.0, 0.0), "overhead": (0.0, 0.0), "malloc": (1.0, 0.0), "touch1": (2.0, 0.0)}
    result = {c.name: c.ok for c in checks.check(acc, untraced, buffer_pages=4)}
    assert result == {"adds up": True, "exec set-up bounded": True, "probe agrees": True, "untraced agrees": True, "touch1 in buffer": True}


def test_checks_catch_disagreement_beyond_one_fault_and_a_wrong_page_count() -> None:
    probe = {"entry": (17, 0), "overhead": (0, 0), "malloc": (1, 0), "touch1": (3, 0)}  # one more than traced
    acc = account.attribute("c", trace.parse(raw_trace(SAMPLES, rusage=21)), loader, STAGES, exe=EXE, probe_stages=probe)
    found = {c.name: c for c in checks.check(acc, {"entry": (8.0, 0.0), "touch1": (3.0, 0.0)}, buffer_pages=5)}
    assert not found["probe agrees"].ok and "entry 6/0 vs 7/0" in found["probe agrees"].detail
    assert not found["untraced agrees"].ok and found["untraced agrees"].detail == "entry 6/0 vs 8/0"
    assert not found["touch1 in buffer"].ok


def test_render_round_trips_and_diff_puts_the_largest_difference_first() -> None:
    a = account.attribute("x86_64:a", trace.parse(raw_trace(SAMPLES, rusage=21)), loader, STAGES, exe=EXE)
    b = account.attribute("x86_64:b", trace.parse(raw_trace(SAMPLES[:4] + SAMPLES[5:], rusage=20)), loader, STAGES, exe=EXE)
    c = checks.check(a)
    back, back_checks = render.from_dict(json.loads(json.dumps(render.to_dict(a, c))))
    assert back == a and back_checks == c
    rows = account.diff(a, b)
    assert rows[0] == account.DiffRow("[anon]", "-", 4, 3) and rows[0].delta == -1
    text = render.diff_table(a, b, rows)
    assert "x86_64:b minus x86_64:a (whole run): 10 - 11 = -1 faults" in text
    table = render.table(a, c, stage="entry")
    assert "x86_64:a (stage entry): 6 faults since exec; the launcher's fork took 10 more before exec (rusage 21)" in table
    assert "| exe | .bss | 2 | 0 |" in render.table(a, c, stage="entry", md=True)


def test_sections_name_the_gaps_between_them() -> None:
    exe = exe_object()
    assert exe.section_at(0x400010) == "(ELF headers)"
    assert exe.section_at(0x402900) == ".bss"
    assert exe.function_at(0x400900) is None and exe.function_at(0x4008FF) == "touch"
    assert load_bias(exe, 0x555000, 0x2000, PAGE) == 0x555000 - 0x402000


def test_traced_probe_runs_as_lab_run_launches_it() -> None:
    """The tracer plays the re-executing parent (--env-ppid), so the probe keeps its launch mode."""
    job = engine.point_job(
        "k",
        "/tmp/lab-payloads/glibc-dynamic",
        1 << 20,
        0,
        {"tunables": "glibc.malloc.mmap_threshold=4096"},
        False,
        tracer=tracing.TRACER_REMOTE,
    )
    assert job.env == (("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=4096"),)
    assert job.argv == (
        "/tmp/lab-payloads/fault-trace", "--env-ppid", "LAB_PROBE_CHILD", "--",
        "/tmp/lab-payloads/glibc-dynamic", "--size", "1048576", "--file", "/scratch/probe.dat", "--order", "random",
    )  # fmt: skip
    assert "--no-reexec" not in job.argv


def test_ld_statistics_note_drops_pids() -> None:
    text = "      42:\t\n      42:\truntime linker statistics:\n      42:\t  number of relocations: 137\n"
    assert tracing.ld_statistics(text) == "LD_DEBUG=statistics:\n  number of relocations: 137"


def elf_header(machine: int) -> bytes:
    return b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8 + struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0, 0, 0, 0, 64, 56, 0, 64, 0, 0)


def test_put_binary_for_another_arch_is_refused_before_anything_boots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arm = tmp_path / "prog"
    arm.write_bytes(elf_header(183))  # EM_AARCH64
    programs.check_put(arm, arches.get("arm64"))
    with pytest.raises(UserError, match="built for EM_AARCH64, not x86_64"):
        programs.check_put(arm, arches.get("x86_64"))
    text = tmp_path / "script"
    text.write_text("#!/bin/sh\n")
    code = cli.main(["--config", str(REPO / "lab.yaml"), "explain", "--arch", "x86_64", "--put", str(text)])
    err = capsys.readouterr().err
    assert code == 3 and err.strip().splitlines() == [
        f"lab: error: --put {text} is not an ELF executable (cross-build it for the guest (e.g. clang --target=...))"
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--diff", "x86_64:glibc-dynamic", "arm64:nope"], "--diff cell 'arm64:nope': unknown variant 'nope'"),
        (["--diff", "x86_64", "arm64:musl-static"], "--diff cell 'x86_64' is not arch:variant"),
        (["--diff", "x86_64:glibc-dynamic", "arm64:glibc-static", "--", "/bin/true"], "--diff compares probe cells, not a program"),
        (["--stage", "entry", "--", "/bin/true"], "--stage needs the probe's stages"),
    ],
)
def test_bad_explain_input_exits_3_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--config", str(REPO / "lab.yaml"), "explain", *argv])
    err = capsys.readouterr().err
    assert code == 3 and len(err.strip().splitlines()) == 1 and message in err


def test_a_childs_faults_are_a_row_of_their_own_never_exec_set_up() -> None:
    """Regression (issue 19.5): a program that forked a child touching 8 MiB showed `[exec set-up] 3093`, and the
    check passed because the remainder was defined as rusage minus samples."""
    pages = (8 << 20) // PAGE  # the child touches 8 MiB, a fault per page
    child = [[0, 64 + i, 0x400810, 0x30000000 + i * PAGE, 9, 9] for i in range(pages)]  # pid 9: the forked child
    t = trace.parse(raw_trace(SAMPLES + child, rusage=10 + 9 + pages + 2))
    acc = account.attribute("x86_64:forks", t, loader, STAGES, exe=EXE)
    rows = {(o, sec): (mi, ma) for o, sec, mi, ma in acc.rows()}
    assert rows[(account.CHILDREN, "pid 9")] == (pages, 0)
    assert rows[(account.EXEC_SETUP, "-")] == (2, 0)
    assert all(c.ok for c in checks.check(acc)), checks.check(acc)


def test_faults_the_tracer_did_not_see_fail_the_account_instead_of_filling_exec_set_up() -> None:
    """A remainder larger than execve can fault without a perf event (a child not followed, say) fails the check."""
    t = trace.parse(raw_trace(SAMPLES, rusage=10 + 9 + 3093))
    assert t.exec_bound == 1 + 2  # 200 bytes of strings: one page, plus two
    acc = account.attribute("x86_64:forks", t, loader, STAGES, exe=EXE)
    bounded = next(c for c in checks.check(acc) if c.name == "exec set-up bounded")
    assert not bounded.ok and "3093 unsampled faults, at most 3" in bounded.detail


def test_a_childs_mappings_never_name_the_programs_addresses() -> None:
    """The tracer follows children, and their mmap records come too: only the program's own are used."""
    doc = json.loads(raw_trace(SAMPLES, rusage=10 + 9 + 2))
    doc["mmaps"].append({"time": 5, "pid": 9, "start": 0x400000, "len": 0x4000, "pgoff": 0, "prot": 5, "flags": 2, "path": "/bin/other"})
    t = trace.parse(json.dumps(doc))
    assert all(m.pid == 7 for m in t.mmaps) and not any(m.path == "/bin/other" for m in t.mmaps)


def _touch_account(faults: list[account.Fault]) -> account.Account:
    return account.Account(cell="s390x:c", argv=("p",), faults=tuple(faults), unsampled=0, pre_exec=0, rusage_total=len(faults),
                           stages=("malloc", "touch1"), objects=(), probe_stages={})  # fmt: skip


def test_touch1_in_buffer_counts_pages_and_names_the_faults_elsewhere() -> None:
    """Issue 23: s390x under TCG faults each buffer page twice (MVC fetches, then stores); i386's glibc faults its
    memset code in during touch1. Every page of the buffer faulted is what the check holds; the rest is named."""
    buf = "7f0000-7f4000 //anon"

    def anon(page: int, stage: str = "touch1") -> account.Fault:
        return account.Fault(False, stage, "[anon]", "-", "main@exe", False, buf, page)

    twice = [anon(0, "malloc"), *(anon(p) for p in (1, 2, 3, 1, 2, 3))]
    [c] = [c for c in checks.check(_touch_account(twice), buffer_pages=4) if c.name == "touch1 in buffer"]
    assert c.ok and "3 of them a second fault on a page" in c.detail, c.detail
    code = [*twice, account.Fault(False, "touch1", "libc.so", ".text", "__memset_sse2@libc.so", False, "f7da5000-f7f2d000 libc", 9)]
    [c] = [c for c in checks.check(_touch_account(code), buffer_pages=4) if c.name == "touch1 in buffer"]
    assert c.ok and "1 elsewhere (libc.so .text)" in c.detail, c.detail
    stray = [*twice, account.Fault(False, "touch1", "[anon]", "-", "main@exe", False, "8f0000-8f1000 //anon", 99)]
    [c] = [c for c in checks.check(_touch_account(stray), buffer_pages=4) if c.name == "touch1 in buffer"]
    assert not c.ok  # another anonymous mapping took first-touch faults: not the buffer's
    [c] = [c for c in checks.check(_touch_account(twice), buffer_pages=5) if c.name == "touch1 in buffer"]
    assert not c.ok  # a page of the buffer never faulted
