"""helix.reporting."""
