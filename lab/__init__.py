"""lab: a cross-architecture QEMU test lab measuring page-fault baselines."""

__version__ = "0.1.0"
