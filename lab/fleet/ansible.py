"""Ansible as lab's fleet engine: argv builders (pure), the environment, and one owned ansible-playbook run.

lab runs the playbooks in ``ansible/`` (a wheel carries them as ``lab._ansible``) with that directory's
``ansible.cfg``, whose ``lab_outcomes`` callback writes every host's outcome (ok/changed/unreachable/failed, and
why) as JSON: read from data, never scraped from text; the normal output is kept in the work directory. ansible-playbook runs in its own session; Ctrl-C, SIGTERM or a
deadline stops the whole group (polite, then forced). SSH connections are shared per host (ControlPersist) through
sockets in a private directory, and every master is told to exit when the play ends: none outlives the command.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import resources
from lab.errors import InfraError

log = logging.getLogger(__name__)
SSH_ARGS = "-o ControlMaster=auto -o ControlPersist=120s -o ServerAliveInterval=5 -o ServerAliveCountMax=3"


def tool(name: str) -> str:
    """An Ansible command from lab's own environment (the venv's bin), else from PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def environment(control_dir: Path | None = None) -> dict[str, str]:
    d = resources.ansible_dir()
    return dict(
        os.environ,
        **({"ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir)} if control_dir else {}),
        ANSIBLE_CONFIG=str(d / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(d / "roles"),
        ANSIBLE_SSH_ARGS=SSH_ARGS,
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )


def inventory_argv(inventory: Path) -> list[str]:
    return [tool("ansible-inventory"), "-i", str(inventory), "--list"]


def playbook_argv(playbook: str, inventory: Path, extra_vars: Path, limit: tuple[str, ...] = ()) -> list[str]:
    argv = [tool("ansible-playbook"), "-i", str(inventory), str(resources.ansible_dir() / playbook), "-e", f"@{extra_vars}"]
    return argv + (["--limit", ",".join(limit)] if limit else [])


@dataclass(frozen=True)
class HostOutcome:
    ok: int
    changed: int
    unreachable: int
    failures: int
    why: str  # the first failed or unreachable task's message ("" when all went well)

    @property
    def good(self) -> bool:
        return not self.unreachable and not self.failures


def outcomes(doc: dict[str, Any]) -> dict[str, HostOutcome]:
    """Per host, from the lab_outcomes callback's document: its stats and why it failed, if it did."""
    why: dict[str, str] = doc.get("why", {})
    return {
        host: HostOutcome(s.get("ok", 0), s.get("changed", 0), s.get("unreachable", 0), s.get("failures", 0), why.get(host, ""))
        for host, s in doc.get("stats", {}).items()
    }


def play(
    playbook: str, inventory: Path, extra: dict[str, Any], work: Path, limit: tuple[str, ...] = (), seconds: float = 4 * 3600
) -> dict[str, HostOutcome]:
    """Run ``playbook`` to its end; its JSON output and stderr are kept in ``work``. A host's failure is data; an
    Ansible that cannot run at all is an InfraError."""
    work.mkdir(parents=True, exist_ok=True)
    extra_file = work / f"{Path(playbook).stem}.vars.json"
    extra_file.write_text(json.dumps(extra, indent=1))
    argv = playbook_argv(playbook, inventory, extra_file, limit)
    stem = Path(playbook).stem
    out_path, log_path = work / f"{stem}.outcomes.json", work / f"{stem}.log"
    out_path.unlink(missing_ok=True)
    log.debug("running %s", " ".join(argv))
    with log_path.open("w") as out, tempfile.TemporaryDirectory(prefix="lab-ssh-") as control:  # short: socket paths
        try:
            env = {**environment(Path(control)), "LAB_ANSIBLE_OUTCOMES": str(out_path)}
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise InfraError(f"{argv[0]} not found", "pip install ansible-core (./setup.sh does)") from None
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise InfraError(f"ansible-playbook {playbook} did not finish within {seconds:.0f}s", f"see {log_path}") from None
        except BaseException:  # Ctrl-C, SIGTERM (the CLI raises it): the whole group goes
            _stop(proc)
            raise
        finally:
            _close_masters(Path(control))
    try:
        doc = json.loads(out_path.read_text())
    except (OSError, ValueError):  # Ansible stopped before any play ran (bad inventory, syntax, missing var)
        last = [ln for ln in log_path.read_text().strip().splitlines() if ln.strip()] or ["(no output)"]
        raise InfraError(f"ansible-playbook {playbook} exited {proc.returncode}: {last[-1][:300]}", f"see {log_path}") from None
    return outcomes(doc)


def _close_masters(control: Path) -> None:
    """Tell every SSH connection master Ansible left in ``control`` to exit (they detach from our process group).
    Never raises: it runs while another error (or Ctrl-C) may be on its way out."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for sock in control.iterdir():
            subprocess.run(
                ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "lab-fleet-host"], capture_output=True, timeout=10, check=False
            )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
