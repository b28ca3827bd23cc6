"""Security suite (placeholder docstring; rewritten below)."""
