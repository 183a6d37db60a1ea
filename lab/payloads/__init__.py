"""Payloads: the variant table, toolchains, cached cross-builds and the probe's output parser."""
