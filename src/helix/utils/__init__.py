"""Helpers below every other tier: atomic file writes that never destroy their inputs."""
