"""Staged rollouts."""
