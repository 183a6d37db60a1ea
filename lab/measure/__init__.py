"""Measuring: plans, the engine that runs probes in a guest (batched, with deadlines) and the matrix runner."""
