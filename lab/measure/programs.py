"""``lab explain -- PROGRAM``: any program in the image (or uploaded with ``--put``), traced on each arch.

Bad input is found before a guest boots: an uploaded binary built for another
architecture (its ELF machine is read first), or a program path that the
image does not have. The guest's own verdict (fault-trace cannot execute it)
is the last word for names looked up in ``PATH``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from lab.arches import Arch
from lab.config import Config
from lab.errors import UserError
from lab.explain.account import Account
from lab.guests.boot import boot
from lab.guests.images import ImageStore
from lab.measure import tracing
from lab.payloads.build import reseed_helper

PUT_DIR = "/tmp/lab-put"


def check_put(path: Path, arch: Arch) -> None:
    """An uploaded binary must exist and be an ELF file for ``arch``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"--put {path}: {exc.strerror}", "name a cross-built binary that exists") from None
    try:
        machine = str(ELFFile(io.BytesIO(data)).header.e_machine)
    except ELFError:
        raise UserError(f"--put {path} is not an ELF executable", "cross-build it for the guest (e.g. clang --target=...)") from None
    if machine != arch.elf_machine:
        raise UserError(
            f"--put {path} is built for {machine}, not {arch.name} ({arch.elf_machine})",
            f"build it for {arch.triplet}, or run with --arch matching the binary",
        )


def explain_program(
    cfg: Config,
    arches: Sequence[Arch],
    argv: Sequence[str],
    put: Path | None,
    progress: Callable[[str, str], None],
) -> list[Account]:
    """Trace ``argv`` once per arch (``argv[0]`` may name the ``--put`` binary by its file name)."""
    if not argv:
        raise UserError("lab explain -- needs a program", "e.g. lab explain --arch all -- /bin/busybox true")
    remote_put = f"{PUT_DIR}/{put.name}" if put else None
    if put:
        for arch in arches:
            check_put(put, arch)
    command = list(argv)
    if put and command[0] in (put.name, str(put)):
        command[0] = remote_put or command[0]
    accounts = []
    store = ImageStore(cfg)
    for arch in arches:
        progress(arch.name, "building image")
        image = store.ensure(arch)
        tracer = tracing.build_tracer(cfg, arch)
        files = tracing.guest_files(cfg, image, None, {remote_put: put} if put and remote_put else {})
        if command[0].startswith("/") and not files.exists(command[0]):
            raise UserError(
                f"{command[0]} does not exist in the {arch.name} image", "name a program the image has, or upload one with --put"
            )
        progress(arch.name, "booting")
        with boot(cfg, image, None, None, reseed=reseed_helper(cfg, arch)) as b:
            tracing.install_tracer(b.guest, tracer)
            if put and remote_put:
                b.guest.run(f"mkdir -p {PUT_DIR}")
                b.guest.put(put, remote_put)
                b.guest.run(f"chmod 755 {remote_put}")
            progress(arch.name, "tracing")
            name = Path(command[0]).name
            accounts.append(tracing.trace_program(b.guest, files, command, f"{arch.name}:{name}", int(cfg.timeouts.scaled("command"))))
        progress(arch.name, "done")
    return accounts
