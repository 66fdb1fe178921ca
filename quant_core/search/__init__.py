"""Searches over configs: per-layer sensitivity sweeps and the greedy mixed-precision suggestion."""
