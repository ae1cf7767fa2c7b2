"""`make bench-overload`: the overload drill of issue 21 (docs/PERFORMANCE.md)."""
