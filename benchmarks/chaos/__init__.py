"""Fault drills (`make chaos`, `python -m benchmarks.chaos`): each fault made for real
against a real `entitlements serve --workers 2` under a steady read+write load, judged by
the answers during the fault, the acknowledged writes lost (must be 0) and the time until
the service serves normally again without a restart. See __main__.py, harness.py (how a
drill is run and judged) and drills.py."""
