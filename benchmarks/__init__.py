"""Benchmarks of the policy layer: seeded workloads, one script per hot path, `run` for all."""
