"""The end-to-end load benchmark against the empty-handler floor: `python -m benchmarks.load`
(see __main__.py and docs/PERFORMANCE.md)."""
