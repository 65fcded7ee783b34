"""Metrics: a functional core plus stateful classes that accumulate over samples."""
