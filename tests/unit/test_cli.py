"""The CLI's contract: one-line errors with remedies, mapped exit codes, no tracebacks."""

import subprocess
import sys
from pathlib import Path

import pytest

from lab import arches, cli

REPO = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_unknown_arch_exit_3_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--config", str(REPO / "lab.yaml"), "exec", "--arch", "mips", "--", "true")
    assert code == 3
    [line] = err.strip().splitlines()
    assert line.startswith("lab: error: unknown arch 'mips' (use one of: " + ", ".join(arches.names()) + ", 'all' (x86_64, arm64, riscv64)")
    assert "'everything'" in line and "aliases: aarch64, amd64, arm," in line


def test_bad_config_names_file_key_and_allowed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "lab.yaml"
    bad.write_text("accel: turbo\n")
    code, _, err = run(capsys, "--config", str(bad), "images", "list")
    assert code == 3
    assert err == f"lab: error: {bad}: accel: 'turbo' is not valid (expected one of auto, kvm, tcg)\n"


def test_usage_errors_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "boot")
    assert code == 3 and "the following arguments are required: --arch" in err
    code, _, err = run(capsys, "--config", str(REPO / "lab.yaml"), "exec", "--arch", "arm64")
    assert code == 3 and "no command given" in err


def test_help_documents_exit_codes() -> None:
    out = subprocess.run([sys.executable, "-m", "lab", "--help"], capture_output=True, text=True, check=True).stdout
    assert "exit codes: 0 ok; 1 a check or guest failed" in out and "3 usage or config error" in out and "130 interrupted" in out


def test_no_traceback_for_missing_config() -> None:
    proc = subprocess.run([sys.executable, "-m", "lab", "--config", "/nonexistent/lab.yaml", "run"], capture_output=True, text=True)
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert proc.stderr == "lab: error: /nonexistent/lab.yaml: config file not found (run from the lab checkout or pass --config FILE)\n"


def test_write_atomic_turns_a_full_or_missing_directory_into_an_infra_error(tmp_path: Path) -> None:
    from lab.errors import InfraError
    from lab.files import write_atomic

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InfraError, match=r"cannot write .*file/out.json"):
        write_atomic(blocker / "out.json", "{}")
    write_atomic(tmp_path / "ok.json", "{}")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def write_config(tmp_path: Path, **sections: dict[str, str]) -> Path:
    import yaml

    raw = yaml.safe_load((REPO / "lab.yaml").read_text())
    raw["recipe"] = str(REPO / "images" / "tiny.yaml")
    for key, values in sections.items():
        raw[key] = {**raw.get(key, {}), **values}
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("sections", "argv", "code", "message"),
    [
        (
            {"paths": {"cache": "/proc/lab-nope/cache"}},
            ["payloads", "build", "--arch", "x86_64", "--variant", "glibc-static"],
            4,
            "/proc/lab-nope",
        ),
        ({"paths": {"cache": "/proc/lab-nope/cache"}}, ["run", "--arch", "x86_64"], 4, "/proc/lab-nope"),
        ({"run": {"store": "/proc/lab-nope/lab.sqlite"}}, ["runs", "show"], 3, "no results store yet"),
        ({"run": {"store": "/proc/lab-nope/lab.sqlite"}}, ["baseline", "save", "x"], 4, "cannot create /proc/lab-nope"),
    ],
)
def test_unwritable_paths_are_one_line_errors_not_tracebacks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sections: dict[str, dict[str, str]], argv: list[str], code: int, message: str
) -> None:
    """Regression (issue 10.8): paths.cache / run.store under /proc were tracebacks with exit 1."""
    got, _, err = run(capsys, "--config", str(write_config(tmp_path, **sections)), *argv)
    assert got == code and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lab: error: ") and message in lines[0], err


def test_report_into_a_directory_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Regression (issue 10.15): lab report -o DIR suggested freeing disk space."""
    from tests.unit.test_report import make_store

    store = tmp_path / "s.db"
    make_store(store).close()
    conf = write_config(tmp_path, run={"store": str(store)})
    code, _, err = run(capsys, "--config", str(conf), "report", "-o", str(tmp_path))
    assert code == 3 and err.strip() == f"lab: error: cannot write {tmp_path}: it is a directory (give a file path)"


def test_an_unexpected_exception_is_one_line_exit_4_and_a_traceback_only_with_v(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object) -> int:
        raise KeyError("surprise")

    monkeypatch.setattr("lab.cli.guests.cmd_doctor", boom)
    code, _, err = run(capsys, "--config", str(REPO / "lab.yaml"), "doctor", "--no-kvm")
    assert code == 4 and err.strip().splitlines() == [
        "lab: error: internal error: KeyError: 'surprise' (this is a bug in lab: run again with -v and report the traceback)"
    ]
    code, _, err = run(capsys, "--config", str(REPO / "lab.yaml"), "-v", "doctor", "--no-kvm")
    assert code == 4 and "Traceback (most recent call last)" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["history", "--arch", "x86_64", "--variant", "musl-static", "--stage", "bogus"], "--stage 'bogus' is not valid"),
        (["history", "--arch", "x86_64", "--variant", "musl-static", "--last", "0"], "--last 0 is not valid"),
    ],
)
def test_history_options_are_checked(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str) -> None:
    """Regression (issue 10.15): --stage bogus exited 0, --last 0 returned every row."""
    from tests.unit.test_report import make_store

    make_store(tmp_path / "s.db").close()
    code, _, err = run(capsys, "--config", str(write_config(tmp_path, run={"store": str(tmp_path / "s.db")})), *argv)
    assert code == 3 and message in err


@pytest.mark.parametrize("problem", ["readable", "corrupt", "missing-recipe"])
def test_user_errors_in_lab_run_are_found_before_anything_boots(capsys: pytest.CaptureFixture[str], tmp_path: Path, problem: str) -> None:
    """Regression (issue 10.9, 10.13): config and key problems became 'image' cell errors with exit 1, or an sshd
    problem after 30 s and 146 attempts. They are usage errors, before a run row or a guest exists."""
    from lab.guests.keys import client_key
    from lab.results.store import Store

    cache = tmp_path / "cache"
    conf = write_config(tmp_path, paths={"cache": str(cache), "results": str(tmp_path / "results")})
    key = client_key(cache / "keys").private
    expected = {
        "readable": f"{key} is readable by others",
        "corrupt": f"{key}: not a usable OpenSSH private key",
        "missing-recipe": "recipe not found",
    }[problem]
    if problem == "readable":
        key.chmod(0o644)
    elif problem == "corrupt":
        key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nbm90IGEga2V5\n-----END OPENSSH PRIVATE KEY-----\n")
    else:
        conf.write_text("recipe: images/none.yaml\n")
    code, _, err = run(capsys, "--config", str(conf), "run", "--arch", "x86_64")
    assert code == 3 and err.startswith("lab: error: ") and expected in err and len(err.strip().splitlines()) == 1, err
    store = tmp_path / "results" / "lab.sqlite"
    if store.exists():
        with Store(store, readonly=True) as s:
            assert s.runs() == []


def test_a_closed_pipe_is_not_an_error(tmp_path: Path) -> None:
    """`lab payloads list | head -1` printed "lab: error: Broken pipe" and exited 4."""
    conf = write_config(tmp_path)
    proc = subprocess.run(
        f"{sys.executable} -m lab --config {conf} completion bash | head -c 10 >/dev/null; echo ${{PIPESTATUS[0]}}",
        shell=True, executable="/bin/bash", capture_output=True, text=True,
    )  # fmt: skip
    assert proc.stderr == "" and proc.stdout.strip() in ("0", "141")


def test_listing_an_empty_store_is_an_empty_list(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    conf = write_config(tmp_path, run={"store": str(tmp_path / "none.sqlite")})
    assert run(capsys, "--config", str(conf), "runs", "list")[:2] == (0, f"no runs in {tmp_path / 'none.sqlite'}\n")
    assert run(capsys, "--config", str(conf), "baseline", "list", "--json")[:2] == (0, "[]\n")
    assert not (tmp_path / "none.sqlite").exists()
