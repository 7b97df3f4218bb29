"""Profiling tools and one-off comparisons behind design decisions (docs/adr); not part of make bench."""
