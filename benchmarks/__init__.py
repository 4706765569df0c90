"""Benchmark scripts (run by hand, not timed tests); shared helpers in ``machine``."""
