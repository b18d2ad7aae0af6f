"""Counting where a property's generated examples went, so that a property cannot pass because every example took
the error path: an input strategy that only ever produces rejected inputs tests the rejection and nothing else.

    seen = Outcomes()

    @given(...)
    def check(x):
        ...
        seen["accepted" if ok else "rejected"] += 1

    check()
    seen.require(accepted=20, rejected=20)
"""

from collections import Counter


class Outcomes(Counter):
    def require(self, **minimums: int) -> None:
        """Each named outcome was reached by at least that many generated examples."""
        short = {name: f"{self[name]} < {least}" for name, least in minimums.items() if self[name] < least}
        assert not short, f"too few generated examples reached {short}; all outcomes: {dict(self)}"
