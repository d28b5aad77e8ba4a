"""Benchmarks: commands that measure and print figures."""
