"""Per-task evaluation harness and benchmarks."""
