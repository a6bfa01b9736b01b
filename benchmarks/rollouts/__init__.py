"""Rollout benchmarks: how long a published rollout decision takes to reach a fleet."""
