"""The guest runner (payloads/runner.c, compiled for this host) and its job file and framing, run for real."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lab import resources
from lab.measure import batch

JOBS = [
    batch.Job.shell("a:1:0", "echo '{\"x\": 1}'"),
    batch.Job.shell("b:1:0", "echo oops >&2; exit 3"),
    batch.Job.shell("c:1:0", "sleep 5"),
]


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runner") / "lab-runner"
    src = resources.payloads_dir() / "runner.c"
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(src)], check=True)
    return out


def run(runner: Path, tmp_path: Path, jobs: list[batch.Job], seconds: int, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    path = tmp_path / "jobs"
    path.write_bytes(batch.job_file(jobs) if data is None else data)
    return subprocess.run([str(runner), str(path), str(seconds)], capture_output=True, timeout=60)


def test_each_job_runs_under_a_deadline_and_comes_back_framed(runner: Path, tmp_path: Path) -> None:
    done = run(runner, tmp_path, JOBS, 1)
    assert done.returncode == 0, done.stderr
    a, b, c = batch.parse(done.stdout, JOBS)
    assert (a.status, a.stdout, a.stderr, a.deadline) == (0, '{"x": 1}', "", False)
    assert (b.status, b.stdout, b.stderr, b.deadline) == (3, "", "oops", False)
    assert (c.status, c.deadline, c.why()) == (137, True, "killed by the per-run deadline")  # the batch went on


def test_the_deadline_kills_the_whole_process_group(runner: Path, tmp_path: Path) -> None:
    """Regression (issue 10.7): timeout -s KILL killed the launcher only; a re-executed probe child hung on."""
    hung = batch.Job.shell("h:1:0", f"sleep 300 & echo $! > {tmp_path}/child; wait")
    [h] = batch.parse(run(runner, tmp_path, [hung], 1).stdout, [hung])
    assert (h.status, h.deadline) == (137, True)
    child = int(Path(f"{tmp_path}/child").read_text())
    stat = Path(f"/proc/{child}/stat")
    state = stat.read_text().rsplit(")", 1)[1].split()[0] if stat.exists() else "gone"
    assert state in ("gone", "Z")


def test_what_a_finished_run_leaves_in_its_group_is_killed_and_reaped(runner: Path, tmp_path: Path) -> None:
    """A run costs one run: a background process it leaves behind does not live on into the next run."""
    leaver = batch.Job.shell("l", f"sleep 300 & echo $! > {tmp_path}/left")
    after = batch.Job.shell("n", f"kill -0 $(cat {tmp_path}/left) 2>/dev/null && echo alive || echo gone")
    done = run(runner, tmp_path, [leaver, after], 30)
    left, nxt = batch.parse(done.stdout, [leaver, after])
    assert (left.status, nxt.stdout) == (0, "gone")


def test_a_job_sees_only_its_own_environment_and_writes(runner: Path, tmp_path: Path) -> None:
    target = tmp_path / "thp"
    target.write_text("never\n")
    job = batch.Job(
        "e", (batch.SHELL, "-c", f"env | sort; cat {target}"), env=(("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=4096"),),
        writes=((str(target), "always"),),
    )  # fmt: skip
    os.environ["LAB_SHOULD_NOT_LEAK"] = "1"
    try:
        [o] = batch.parse(run(runner, tmp_path, [job], 30).stdout, [job])
    finally:
        del os.environ["LAB_SHOULD_NOT_LEAK"]
    lines = o.stdout.splitlines()
    assert lines[-1] == "always" and "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4096" in lines
    assert f"PATH={batch.PATH}" in lines and not any("LAB_SHOULD_NOT_LEAK" in x for x in lines)


def test_a_write_that_fails_fails_the_run_with_its_reason(runner: Path, tmp_path: Path) -> None:
    job = batch.Job("w", (batch.SHELL, "-c", "echo ran"), writes=((str(tmp_path / "no" / "such"), "x"),))
    [o] = batch.parse(run(runner, tmp_path, [job], 30).stdout, [job])
    assert o.status == 1 and o.stdout == "" and "writing" in o.stderr and "No such file" in o.stderr


def test_a_program_that_cannot_be_executed_is_status_127(runner: Path, tmp_path: Path) -> None:
    job = batch.Job("x", (str(tmp_path / "missing"),))
    [o] = batch.parse(run(runner, tmp_path, [job], 30).stdout, [job])
    assert o.status == 127 and "cannot execute" in o.stderr


def test_output_of_any_bytes_comes_back_exactly(runner: Path, tmp_path: Path) -> None:
    """The framing carries lengths: output that looks like a frame, or holds no newline, is still only output."""
    tricky = f"\\n{batch.END}a:1:0\\n{batch.RUN}z 0 0 0 1 1\\nno newline at the end"
    job = batch.Job.shell("t", f"printf '{tricky}'")
    [o] = batch.parse(run(runner, tmp_path, [job], 30).stdout, [job])
    assert (o.status, o.stdout) == (0, f"{batch.END}a:1:0\n{batch.RUN}z 0 0 0 1 1\nno newline at the end")


def test_a_malformed_job_file_is_refused_whole(runner: Path, tmp_path: Path) -> None:
    good = batch.job_file([batch.Job.shell("a", f"touch {tmp_path}/ran")])
    for bad in (good[:-1], good.replace(b"K 1\na", b"K 9\na"), b"LAB-JOBS 2\n" + good[len(batch.MAGIC) :], good + b"X 0\n\n"):
        done = run(runner, tmp_path, [], 30, data=bad)
        assert (done.returncode, done.stdout) == (65, b"") and b"not a job file" in done.stderr
    assert not (tmp_path / "ran").exists()


def test_cut_or_garbled_frames_are_rejected_not_guessed() -> None:
    jobs = [batch.Job.shell(k, "true") for k in ("a", "b", "c")]
    a = f"{batch.RUN}a 0 0 0 2 0\n{{}}\n{batch.END}a\n".encode()
    b = f"{batch.RUN}b 0 0 0 9 0\n{{}}\n{batch.END}b\n".encode()  # its length is wrong
    got = batch.parse(a + b + a, jobs)
    assert (got[0].status, got[0].stdout) == (0, "{}")
    assert got[1].status == -1 and "garbled at byte" in got[1].stderr and got[2].status == -1
    cut = batch.parse(a + b'@@LAB-RUN b 0 0 0 100 0\n{"trunc', jobs)
    assert cut[0].status == 0 and cut[1].status == -1 and cut[2].status == -1
    assert batch.parse(a + a, jobs)[1].status == -1  # a key twice is not a second run


def test_keys_and_fields_the_runner_would_refuse_are_refused_here() -> None:
    for job in (batch.Job.shell("a b", "true"), batch.Job("a", ("relative",)), batch.Job.shell("a", "\0")):
        with pytest.raises(ValueError):
            batch.job_file([job])


def test_commands_are_data_not_shell(runner: Path, tmp_path: Path) -> None:
    evil = batch.Job("e", ("/bin/echo", f"x'; touch {tmp_path}/pwned; echo '"))
    [o] = batch.parse(run(runner, tmp_path, [evil], 30).stdout, [evil])
    assert o.stdout == f"x'; touch {tmp_path}/pwned; echo '" and not (tmp_path / "pwned").exists()


def test_the_job_file_can_come_on_stdin(runner: Path) -> None:
    """How lab ships a round: the runner reads its jobs from a pipe (no file, no size from fstat)."""
    jobs = [batch.Job.shell(f"j{i}", f"echo {i}-{'x' * 3000}") for i in range(40)]  # more than one pipe buffer
    done = subprocess.run([str(runner), "-", "30"], input=batch.job_file(jobs), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [o.stdout for o in batch.parse(done.stdout, jobs)] == [f"{i}-{'x' * 3000}" for i in range(40)]


def test_a_failed_run_counts_only_its_own_oom_kills(runner: Path, tmp_path: Path) -> None:
    later = [batch.Job.shell("x", "exit 1")]
    [x] = batch.parse(run(runner, tmp_path, later, 5).stdout, later)
    assert (x.status, x.deadline, x.oom_kills, x.why()) == (1, False, 0, "exit status 1")
