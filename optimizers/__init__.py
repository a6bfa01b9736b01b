"""Optimizer passes and workers: turn a model and feedback data into a verified, signed candidate."""
