"""Baselines: predictors scored with the same metrics on the same samples as a method."""
