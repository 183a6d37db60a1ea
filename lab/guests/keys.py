"""The lab's own SSH keys: one client key, one host key per guest architecture.

Private keys are created 0600 in ``<cache>/keys``. Guests are key-only, and the
client pins each guest's host key (anything else is refused), so nothing
depends on the user's ~/.ssh.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lab.errors import InfraError, UserError
from lab.files import write_atomic


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: str  # one OpenSSH public key line: "ssh-ed25519 AAAA..."

    @property
    def key_type(self) -> str:
        return self.public.split()[0]

    @property
    def key_base64(self) -> str:
        return self.public.split()[1]


def _check_mode(path: Path) -> None:
    if path.stat().st_mode & 0o077:
        raise UserError(f"{path} is readable by others", f"chmod 600 {path}")


def client_key(keys_dir: Path) -> KeyPair:
    """The lab's SSH client key (OpenSSH format), created on first use."""
    private = keys_dir / "client_ed25519"
    public = keys_dir / "client_ed25519.pub"
    if not private.exists() or not public.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
        pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(private, pem, mode=0o600)
        write_atomic(public, pub.decode() + " lab-client\n")
    _check_mode(private)
    pair = KeyPair(private, " ".join(public.read_text().split()[:2]))
    _check_client(pair, keys_dir)
    return pair


def _check_client(pair: KeyPair, keys_dir: Path) -> None:
    """A corrupt or mismatched client key is named here, not after an SSH deadline blamed on the guest."""
    remedy = f"delete {keys_dir}/client_ed25519 and client_ed25519.pub: lab makes a new pair (images rebuild with it)"
    try:
        key = serialization.load_ssh_private_key(pair.private.read_bytes(), password=None)
        derived = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    except (ValueError, TypeError, OSError, UnsupportedAlgorithm) as exc:
        raise UserError(f"{pair.private}: not a usable OpenSSH private key ({exc})", remedy) from None
    if derived.split()[:2] != pair.public.split()[:2]:
        raise UserError(f"{pair.private} and its .pub do not match", remedy)


def host_key(keys_dir: Path, name: str) -> KeyPair:
    """A guest host key in dropbear's format (made by the host's ``dropbearkey``), created on first use."""
    private = keys_dir / f"host-{name}.dropbear"
    public = keys_dir / f"host-{name}.pub"
    if not private.exists() or not public.exists():
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = private.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        try:
            subprocess.run(["dropbearkey", "-t", "ed25519", "-f", str(tmp)], check=True, capture_output=True)
            out = subprocess.run(["dropbearkey", "-y", "-f", str(tmp)], check=True, capture_output=True, text=True).stdout
        except FileNotFoundError:
            raise UserError("dropbearkey not found", "install dropbear-bin (./setup.sh does)") from None
        except subprocess.CalledProcessError as exc:
            raise InfraError(f"dropbearkey failed: {exc.stderr!r}", "check the cache directory is writable") from None
        line = next((ln for ln in out.splitlines() if ln.startswith("ssh-")), None)
        if line is None:
            raise InfraError("dropbearkey -y printed no public key", "check the host's dropbear-bin")
        os.chmod(tmp, 0o600)
        os.replace(tmp, private)
        write_atomic(public, " ".join(line.split()[:2]) + f" lab-host-{name}\n")
    _check_mode(private)
    return KeyPair(private, " ".join(public.read_text().split()[:2]))
