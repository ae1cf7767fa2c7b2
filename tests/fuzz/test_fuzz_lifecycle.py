"""The lifecycle oracle (tests/unit/test_lifecycle_oracle.py) over many more generated
lives: `make fuzz` runs FUZZ_EXAMPLES of them (the default suite runs a short search)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_lifecycle_oracle import check_life

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_many_lives_match_the_oracle(seed: int) -> None:
    check_life(seed, orders=12)
