"""Small defects an outside break-test found (issue 19.10), each kept fixed: setup.sh's failure paths, output to a
stream that cannot encode a path, Ctrl-C while lab is still importing, a run whose directory cannot be made."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOLS = (
    "bash",
    "env",
    "sed",
    "awk",
    "tr",
    "grep",
    "cat",
    "dirname",
    "rm",
    "mkdir",
    "cp",
    "touch",
    "chmod",
    "tee",
    "tail",
    "sha256sum",
    "cut",
)


def sandbox(tmp_path: Path, packages: str) -> tuple[Path, Path]:
    """A copy of setup.sh with its own package list, and a bin dir holding only the tools it may use."""
    root, bin_ = tmp_path / "repo", tmp_path / "bin"
    (root / "ansible").mkdir(parents=True)
    (root / "tests").mkdir()
    for name in ("setup.sh", "pyproject.toml", "constraints.txt"):
        shutil.copy(REPO / name, root / name)
    (root / "ansible" / "host-packages.txt").write_text(packages)
    (root / "tests" / "packages.txt").write_text("")
    bin_.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, tool
        (bin_ / tool).symlink_to(found)
    return root, bin_


def script(path: Path, text: str) -> None:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)


def run_setup(root: Path, bin_: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_ / "bash"), str(root / "setup.sh"), *args], capture_output=True, text=True, env={"PATH": str(bin_), **env}, timeout=60
    )


def test_setup_without_root_or_sudo_says_what_to_run_as_root(tmp_path: Path) -> None:
    """Regression: it printed `sudo: command not found` (rc 127)."""
    root, bin_ = sandbox(tmp_path, "lab-no-such-package  # missing\n")
    script(bin_ / "id", "echo 1000\n")
    script(bin_ / "dpkg-query", "exit 1\n")
    done = run_setup(root, bin_)
    assert done.returncode == 3, done.stderr
    assert "run as root: apt-get update && apt-get install --no-install-recommends lab-no-such-package" in done.stderr


def test_setup_installs_with_services_held_off_and_leaves_the_tests_sshd_disabled(tmp_path: Path) -> None:
    """Regression: ./test.sh's openssh-server would start a system-wide sshd on port 22 on a systemd host."""
    root, bin_ = sandbox(tmp_path, "openssh-server service-off=ssh.service,ssh.socket  # the tests' sshd binary\n")
    policy, log, systemd = tmp_path / "policy-rc.d", tmp_path / "log", tmp_path / "run-systemd"
    systemd.mkdir()
    script(bin_ / "id", "echo 0\n")
    script(bin_ / "dpkg-query", "exit 1\n")
    script(bin_ / "apt-get", f'echo "apt-get $* policy=$(cat {policy} | tail -1)" >> {log}\n')
    script(bin_ / "systemctl", f'echo "systemctl $*" >> {log}\n')
    done = run_setup(root, bin_, LAB_POLICY_RC_D=str(policy), LAB_SYSTEMD_RUN=str(systemd), PYTHON="false")
    assert done.returncode == 3 and "lab needs Python" in done.stderr  # stopped before the venv, as asked
    lines = log.read_text().splitlines()
    assert [ln.split()[1] for ln in lines[:2]] == ["update", "install"] and all(ln.endswith("policy=exit 101") for ln in lines[:2])
    assert lines[2] == "systemctl disable --now ssh.service ssh.socket"
    assert not policy.exists()  # the policy lab made is gone again


def test_setup_recreates_a_venv_whose_creation_was_interrupted(tmp_path: Path) -> None:
    """Regression: an interrupted `python -m venv` left .venv without pip, and every rerun failed."""
    root, bin_ = sandbox(tmp_path, "")
    fake_python = (
        'case "$1 $2" in\n'
        '  "-c "*) exit 0 ;;\n'
        '  "-m venv") mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && touch "$3/has-pip"; exit 0 ;;\n'
        '  "-m pip") [ -e "$(dirname "$0")/../has-pip" ] || exit 1\n'
        '            echo "$*" >> "$(dirname "$0")/../pip.log"; [ "$3" = show ] && exit 1; exit 0 ;;\n'
        "esac\n"
    )
    script(bin_ / "python3", fake_python)
    script(bin_ / "dpkg-query", 'echo "install ok installed"\n')
    (root / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(bin_ / "python3", root / ".venv" / "bin" / "python")  # a venv with a python but no pip
    done = run_setup(root, bin_)
    assert done.returncode == 0, done.stderr
    assert "incomplete (no pip)" in done.stdout and "setup: ready" in done.stdout
    assert "-m pip install" in (root / ".venv" / "pip.log").read_text()


def test_a_second_setup_skips_pip_until_what_it_installs_from_changes(tmp_path: Path) -> None:
    """A no-op ./setup.sh took ~8 s of pip resolving (part of the first run's budget): it now asks pip only when
    pyproject.toml, constraints.txt or the Python changed, or the venv has no lab."""
    root, bin_ = sandbox(tmp_path, "")
    fake_python = (
        'case "$1 $2" in\n'
        '  "-c "*|"-V ") echo Python 3.11.2; exit 0 ;;\n'
        '  "-m venv") mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; exit 0 ;;\n'
        '  "-m pip") echo "$*" >> "$(dirname "$0")/../pip.log"\n'
        '            [ "$3" = install ] && touch "$(dirname "$0")/lab" && chmod +x "$(dirname "$0")/lab"\n'
        '            [ "$3" = show ] && exit 1; exit 0 ;;\n'
        "esac\n"
    )
    script(bin_ / "python3", fake_python)
    script(bin_ / "dpkg-query", 'echo "install ok installed"\n')
    pip_log = root / ".venv" / "pip.log"

    def installs() -> int:
        return pip_log.read_text().count("-m pip install")

    assert run_setup(root, bin_).returncode == 0 and installs() == 1
    assert run_setup(root, bin_).returncode == 0 and installs() == 1  # nothing changed: no pip at all
    (root / "constraints.txt").write_text((root / "constraints.txt").read_text() + "\n# changed\n")
    assert run_setup(root, bin_).returncode == 0 and installs() == 2
    (root / ".venv" / "bin" / "lab").unlink()
    assert run_setup(root, bin_).returncode == 0 and installs() == 3


def lab(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *argv], capture_output=True, text=True, env={**os.environ, **env}, cwd=REPO, timeout=120
    )


def test_a_stream_that_cannot_encode_a_path_gets_it_escaped(tmp_path: Path) -> None:
    """Regression: output to an ASCII stream ended a finished command with `internal error: UnicodeEncodeError`."""
    done = lab("--results", str(tmp_path / "résultats"), "runs", "list", PYTHONIOENCODING="ascii")
    assert done.returncode == 0 and "r\\xe9sultats" in done.stdout, done.stderr
    assert "UnicodeEncodeError" not in done.stderr


def test_ctrl_c_while_lab_imports_ends_quietly(tmp_path: Path) -> None:
    """Regression: SIGINT in lab's first second (its imports) printed a full traceback."""
    hook = tmp_path / "sitecustomize.py"
    hook.write_text(
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'lab.cli':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
    )
    done = lab("runs", "list", PYTHONPATH=str(tmp_path))
    assert done.returncode == 130 and done.stderr.strip() == "lab: interrupted", done.stderr


def test_a_results_directory_is_chosen_without_a_config_file(tmp_path: Path) -> None:
    """Regression: a store outside paths.results could be read only by writing a config file; `lab --results DIR`
    and LAB_RESULTS move run directories, store and nightly directory (what lab.yaml names itself stays)."""
    from lab import config

    want = (tmp_path / "elsewhere").resolve()
    chosen = config.load(REPO / "lab.yaml", want)
    assert (chosen.results_dir, chosen.run.store, chosen.nightly.dir) == (want, want / "lab.sqlite", want / "nightly")
    os.environ["LAB_RESULTS"] = str(want)
    try:
        assert config.load(REPO / "lab.yaml").run.store == want / "lab.sqlite"
    finally:
        del os.environ["LAB_RESULTS"]


def test_setup_never_disables_the_units_of_a_package_the_host_already_had(tmp_path: Path) -> None:
    """A host whose own sshd serves it keeps it: units are left disabled only for packages this run installs."""
    root, bin_ = sandbox(tmp_path, "openssh-server service-off=ssh.service,ssh.socket\nlab-other-package\n")
    log, systemd = tmp_path / "log", tmp_path / "run-systemd"
    systemd.mkdir()
    script(bin_ / "id", "echo 0\n")
    script(bin_ / "dpkg-query", '[ "$3" = openssh-server ] && echo "install ok installed"; exit 0\n')
    script(bin_ / "apt-get", f'echo "apt-get $*" >> {log}\n')
    script(bin_ / "systemctl", f'echo "systemctl $*" >> {log}\n')
    done = run_setup(root, bin_, LAB_POLICY_RC_D=str(tmp_path / "policy-rc.d"), LAB_SYSTEMD_RUN=str(systemd), PYTHON="false")
    assert done.returncode == 3, done.stderr
    lines = log.read_text().splitlines()
    assert lines[1].endswith("lab-other-package") and not any(ln.startswith("systemctl") for ln in lines), lines
