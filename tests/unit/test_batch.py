import subprocess
from pathlib import Path

import pytest

from lab.measure import batch

JOBS = [batch.Job("a:1:0", "echo '{\"x\": 1}'"), batch.Job("b:1:0", "echo oops >&2; exit 3"), batch.Job("c:1:0", "sleep 5")]


def test_script_runs_each_job_under_a_deadline_and_reports_between_markers(tmp_path: object) -> None:
    text = batch.script(JOBS, per_run_seconds=1, workdir=f"{tmp_path}/w")
    out = subprocess.run(["sh", "-c", text], capture_output=True, text=True, timeout=30).stdout
    a, b, c = batch.parse(out, JOBS)
    assert (a.status, a.stdout, a.stderr) == (0, '{"x": 1}', "")
    assert (b.status, b.stdout, b.stderr) == (3, "", "oops")
    assert c.status == 137  # killed by the per-run deadline, the batch went on


def test_the_deadline_kills_the_whole_process_group(tmp_path: object) -> None:
    """Regression (issue 10.7): timeout -s KILL killed the launcher only; a re-executed probe child hung on."""
    hung = batch.Job("h:1:0", f"sleep 300 & echo $! > {tmp_path}/child; wait")
    text = batch.script([hung], per_run_seconds=1, workdir=f"{tmp_path}/w")
    out = subprocess.run(["sh", "-c", text], capture_output=True, text=True, timeout=30).stdout
    [h] = batch.parse(out, [hung])
    assert h.status == 137
    child = int(Path(f"{tmp_path}/child").read_text())
    stat = Path(f"/proc/{child}/stat")
    state = stat.read_text().rsplit(")", 1)[1].split()[0] if stat.exists() else "gone"
    assert state in ("gone", "Z")


def test_missing_blocks_are_failures_not_silence() -> None:
    text = '@@LAB-BEGIN a:1:0\n{}\n@@LAB-STDERR\n\n@@LAB-END 0 0 0\n@@LAB-BEGIN b:1:0\n{"trunc'
    a, b, c = batch.parse(text, JOBS)
    assert a.status == 0 and a.stdout == "{}"
    assert b.status == -1 and c.status == -1 and "batch ended" in c.stderr


def test_keys_must_not_contain_spaces() -> None:
    with pytest.raises(ValueError):
        batch.script([batch.Job("a b", "true")], 1)


def test_commands_are_quoted_as_data() -> None:
    evil = batch.Job("e:1:0", "echo 'x; touch /tmp/pwned-by-lab'")
    text = batch.script([evil], 1, workdir="/tmp/w")
    assert "setsid sh -c 'echo '\"'\"'x; touch /tmp/pwned-by-lab'\"'\"'' >" in text


def test_a_deadline_mark_of_an_earlier_round_blames_nothing_later(tmp_path: object) -> None:
    """Regression (review): the mark file was never removed and job indexes restart every round, so a later run
    at the same index that failed otherwise read "killed by the per-run deadline"."""
    workdir = f"{tmp_path}/w"
    first = subprocess.run(["sh", "-c", batch.script([batch.Job("h", "sleep 5")], 1, workdir)], capture_output=True, text=True).stdout
    assert batch.parse(first, [batch.Job("h", "")])[0].deadline
    later = [batch.Job("x", "exit 1")]
    out = subprocess.run(["sh", "-c", batch.script(later, 5, workdir)], capture_output=True, text=True).stdout
    [x] = batch.parse(out, later)
    assert (x.status, x.deadline, x.why()) == (1, False, "exit status 1")
