"""Hyperparameter schemas of methods and datasets, one small module each.

Each module defines dataclasses extending :class:`harness.config.MethodConfig` (or
``DatasetConfig``) and declares them with :func:`harness.config.add_schema`. They must stay
free of heavy imports (no torch): they are imported whenever a config is composed.
"""
