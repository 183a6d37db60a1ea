"""lab's version: one literal, imported by the package facade, the store's run rows and the wheel."""

__version__ = "0.1.0"
