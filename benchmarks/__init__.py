"""Benchmarks: micro benchmarks (pytest-benchmark, benchmarks/micro), the end-to-end load
tool measured against an empty-handler floor (`python -m benchmarks.load`), and the memory
of a warm cache (`python -m benchmarks.memory`). See docs/PERFORMANCE.md."""
