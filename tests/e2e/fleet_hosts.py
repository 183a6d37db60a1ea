"""Fake lab hosts for fleet tests: one real OpenSSH ``sshd`` per loopback address (127.0.0.2, 127.0.0.3, ...),
each with its own host key, authorized key and directory (lab's venv, cache, results, systemd units).

Nothing listens beyond loopback; nothing outside each host's directory is written. ``stop()`` ends a host's
sshd and every session it serves (as a crashed or unplugged host would), so the lab run it carries is cut off.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

SSHD = "/usr/sbin/sshd"


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


@dataclass
class LoopbackHost:
    name: str
    address: str
    port: int
    root: Path  # the host's own directory
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.root / "sshd_config"

    def start(self, client_pub: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        key = self.root / "ssh_host_ed25519_key"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (self.root / "authorized_keys").write_text(client_pub.read_text())
        self.config.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.address}:{self.port}",
                    f"HostKey {key}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "Subsystem sftp /usr/lib/openssh/sftp-server",
                    "",
                ]
            )
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config)], stderr=(self.root / "sshd.log").open("ab"), start_new_session=True
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex((self.address, self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd for {self.name} exited: {(self.root / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.05)
        raise RuntimeError(f"sshd for {self.name} did not listen on {self.address}:{self.port}")

    def known_host(self) -> str:
        pub = (self.root / "ssh_host_ed25519_key.pub").read_text().split()
        return f"[{self.address}]:{self.port} {pub[0]} {pub[1]}"

    def stop(self) -> None:
        """The listener and every sshd process serving a session (they retitle themselves "sshd: root@notty", so
        they are found as the listener's descendants), at once: the host drops off the network. Commands the
        sessions started are left running, orphaned, as on a host whose network went away."""
        if self.proc is None:
            return
        parent: dict[int, int] = {}
        comm: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    stat = (entry / "stat").read_text()
                    comm[int(entry.name)] = stat[stat.index("(") + 1 : stat.rindex(")")]
                    parent[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
        doomed, frontier = {self.proc.pid}, [self.proc.pid]
        while frontier:
            pid = frontier.pop()
            for child, ppid in parent.items():
                if ppid == pid and comm.get(child, "").startswith("sshd") and child not in doomed:
                    doomed.add(child)
                    frontier.append(child)
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None


def inventory(
    path: Path,
    hosts: list[LoopbackHost],
    client_key: Path,
    known_hosts: Path,
    groups: dict[str, list[str]],
    per_host: dict[str, dict[str, object]],
) -> Path:
    """An Ansible inventory for these hosts: root over SSH with pinned host keys, everything under each host's directory."""
    known_hosts.write_text("".join(h.known_host() + "\n" for h in hosts))
    by_name = {h.name: h for h in hosts}

    def host_vars(h: LoopbackHost) -> dict[str, object]:
        return {
            "ansible_host": h.address,
            "ansible_port": h.port,
            "lab_root": str(h.root / "lab"),
            "lab_cache_dir": str(h.root / "cache"),
            "lab_results_dir": str(h.root / "results"),
            "lab_systemd_dir": str(h.root / "systemd"),
            **per_host.get(h.name, {}),
        }

    doc = {
        "lab_hosts": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(client_key),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes",
                "ansible_python_interpreter": "/usr/bin/python3",
                "lab_become": False,  # already root; no sudo on this machine
                "lab_manage_user": False,  # no system user created on the machine the test runs on
                "lab_user": "root",
                "lab_python": "/usr/bin/python3",
                "lab_pip_no_index": True,  # the controller's wheelhouse only: no traffic beyond loopback
                "lab_nightly_enabled": False,  # units are written into the host's directory, not enabled
            },
            "children": {g: {"hosts": {n: host_vars(by_name[n]) for n in names}} for g, names in groups.items()},
        }
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
