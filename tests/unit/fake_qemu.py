#!/usr/bin/env python3
"""A stand-in for qemu-system-*: behaves as FAKE_QEMU_MODE says, writing to the -serial file.

Modes: boot (prints the ready marker, then idles), die (exits 3 at once with an error on
stderr), hang (never ready, ignores SIGTERM), fail (prints the init failure marker),
spawn (like boot, plus a grandchild that must die with the process group).
"""

import os
import signal
import sys
import time

argv = sys.argv[1:]
console = argv[argv.index("-serial") + 1].removeprefix("file:")
mode = os.environ.get("FAKE_QEMU_MODE", "boot")
pidfile = os.environ.get("FAKE_QEMU_PIDS")


def say(text: str) -> None:
    with open(console, "a") as f:
        f.write(text)


if pidfile:
    with open(pidfile, "a") as f:
        f.write(f"{os.getpid()}\n")
if mode == "die":
    say("Booting...\n")
    print("qemu-system-fake: Could not open kernel: No such file", file=sys.stderr)
    sys.exit(3)
if mode == "hang":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    say("Booting...\n")
if mode == "spawn":
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(1)
    with open(pidfile or os.devnull, "a") as f:
        f.write(f"{child}\n")
if mode in ("boot", "spawn"):
    time.sleep(0.2)
    say("[    0.1] Linux\nLAB-READY 6.1-fake fake64\n")
if mode == "fail":
    say("LAB-INIT-FAILED cannot mount /dev/vda\n")
while True:
    time.sleep(1)
