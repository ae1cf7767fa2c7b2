"""Freshness benchmark (issue 13): write-to-visible and watch notification latency across
workers, the change feed's cost on the cache-hit path, and the cache-TTL hit-rate gain.
Run with `python -m benchmarks.freshness` (or `make bench-freshness`)."""
