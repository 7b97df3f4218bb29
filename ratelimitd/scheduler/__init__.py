"""Scheduling of store calls: the coalescer groups concurrent requests into few script calls."""
