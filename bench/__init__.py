"""Sluice benchmarks: each produces files under ``bench/results/`` and compares as ratios."""
