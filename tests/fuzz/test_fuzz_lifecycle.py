"""The lifecycle oracle (tests/unit/test_lifecycle_oracle.py) over many more generated
lives: `make fuzz` runs FUZZ_EXAMPLES of them (the default suite runs a short search)."""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.lifecycle import LIVES_PER_EXAMPLE, build_life, check, redelivered

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_many_lives_match_the_oracle(seed: int, data: st.DataObject) -> None:
    rng = random.Random(seed)
    for _ in range(LIVES_PER_EXAMPLE):
        life = build_life(rng)
        events = redelivered(life, rng)
        renamed = [e for e in events if e.event_id.endswith("-again")]
        for _order in range(3):
            check([*life.events, *renamed], data.draw(st.permutations(events)))
