"""Benchmarks (`make bench`): each module here has ``run(report: dict)`` adding named figures.

Figures are measured within one process, A/B alternating where two things are compared, and
reported as ratios where possible: the machines are shared and noisy.
"""
