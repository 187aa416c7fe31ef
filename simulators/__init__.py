"""Simulators with a known ground truth: environments, side-by-side simulation, reports."""
