"""The library version (its own module, so every tier can read it without importing the rest)."""

__version__ = "0.1.0"
