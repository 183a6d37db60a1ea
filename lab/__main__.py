"""``lab`` and ``python -m lab``: the command line's entry point.

The CLI's imports (Fabric, paramiko, rich, the whole package) take a noticeable moment; Ctrl-C or SIGTERM
during them ends quietly with the CLI's exit code 130, never with a traceback.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def entry() -> int:
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        from lab.cli import main
    except KeyboardInterrupt:
        print("lab: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return main()


if __name__ == "__main__":
    raise SystemExit(entry())
