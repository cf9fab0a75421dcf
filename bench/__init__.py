"""videojob's benchmarks: ``python -m bench`` (``make bench``) prints a table and writes
bench/results.json. Each figure is measured in the same run as its baseline; numbers are
reported against their aims, never asserted."""
