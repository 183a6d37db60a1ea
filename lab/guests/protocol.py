"""The contract between a guest image and the host: what /init prints, mounts and listens on.

The image builder renders these into ``/init``; the VM owner waits for the
markers; the measuring side finds the scratch disk and its test file here.
"""

from __future__ import annotations

READY_MARKER = "LAB-READY"  # /init prints it (with uname -r and -m) once dropbear listens
FAIL_MARKER = "LAB-INIT-FAILED"  # /init prints it when a step fails; the VM owner stops waiting
SCRATCH_MOUNT = "/scratch"  # the ext4 scratch file system (its image: a virtio disk on a throwaway snapshot)
RAM_MODULE = "brd"  # the kernel's RAM block device driver, from the image's own kernel package
TEST_FILE = "probe.dat"  # on the scratch disk: the file-backed fault stages map and read it
TEST_FILE_PATH = f"{SCRATCH_MOUNT}/{TEST_FILE}"
TEST_FILE_RECORD = 4096  # its records: each starts with its index, so no two are alike (not a page: any page size reads it)
GUEST_IP, GATEWAY = "10.0.2.15", "10.0.2.2"  # QEMU user-mode network
SSH_GUEST_PORT = 22
THP_CONTROL = "/sys/kernel/mm/transparent_hugepage/enabled"
