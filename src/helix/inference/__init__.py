"""helix.inference."""
