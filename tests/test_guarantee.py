"""The guaranteed calibration mode: exact binomial bounds, the promise over many random samples, determinism,
too little data, conflicts."""

import numpy as np
import pytest

from refusal_edge.evaluate import binomial
from refusal_edge.evaluate.calibrate import CalibrationError, calibrate, parse_target
from refusal_edge.evaluate.guarantee import guarantee

A, B = "Alpha requests", "Beta requests"
NAMES = [A, B]


# --- the bounds ------------------------------------------------------------------------------------
def test_clopper_pearson_matches_known_values():
    # Reference values: Beta quantiles (beta.ppf(0.95, 6, 15) = 0.455582, beta.ppf(0.05, 5, 16) = 0.104081) and
    # the closed forms at k = 0 and k = n.
    assert binomial.upper_bound(0, 10, 0.9) == pytest.approx(1 - 0.1 ** (1 / 10), abs=1e-12)
    assert binomial.upper_bound(5, 20, 0.95) == pytest.approx(0.455582, abs=1e-5)
    assert binomial.lower_bound(5, 20, 0.95) == pytest.approx(0.104081, abs=1e-5)
    assert binomial.lower_bound(20, 20, 0.9) == pytest.approx(0.1 ** (1 / 20), abs=1e-12)
    assert binomial.binomial_cdf(3, 10, 0.3) == pytest.approx(0.6496107184, abs=1e-10)
    assert binomial.binomial_cdf(5000, 20000, 0.25) == pytest.approx(0.5, abs=0.01)  # no overflow at large n


@pytest.mark.parametrize("n,p,confidence", [(15, 0.15, 0.9), (60, 0.15, 0.9), (125, 0.1, 0.95), (300, 0.4, 0.8)])
def test_the_bounds_cover_the_true_rate_at_least_as_often_as_promised(n, p, confidence):
    # Exact, not simulated: sum the binomial probabilities of every count whose bound misses p.
    pmf = np.diff(np.r_[0.0, [binomial.binomial_cdf(k, n, p) for k in range(n + 1)]])
    upper_misses = sum(pmf[k] for k in range(n + 1) if binomial.upper_bound(k, n, confidence) < p)
    lower_misses = sum(pmf[k] for k in range(n + 1) if binomial.lower_bound(k, n, confidence) > p)
    assert upper_misses <= 1 - confidence + 1e-9 and lower_misses <= 1 - confidence + 1e-9
    assert upper_misses > (1 - confidence) / 4  # and not uselessly loose


def test_event_counts_agree_with_the_bounds():
    for n, limit, conf in [(125, 0.15, 0.9), (40, 0.3, 0.95), (1000, 0.05, 0.9)]:
        k = binomial.most_events_within(n, limit, conf)
        assert binomial.upper_bound(k, n, conf) <= limit < binomial.upper_bound(k + 1, n, conf)
        need = binomial.fewest_events_within(n, 1 - limit, conf)
        assert binomial.lower_bound(need, n, conf) >= 1 - limit > binomial.lower_bound(need - 1, n, conf)
    assert binomial.most_events_within(14, 0.15, 0.9) is None and binomial.most_events_within(15, 0.15, 0.9) == 0
    assert binomial.trials_needed(0.15, 0.9) == 15 and binomial.trials_needed(0.0, 0.9) is None


# --- the promise on a known distribution ----------------------------------------------------------------
# Benign prompts: p(A), p(B) independent uniform on [0, 0.5], so a shared threshold t refuses a new benign prompt
# with probability R(t) = 1 - min(1, 2t)^2. Should-refuse prompts: p(A) ~ 1 - 0.9 * Beta(1, 3).
def sample(rng, benign, refuse):
    p_benign = rng.uniform(0, 0.5, size=(benign, 2))
    p_refuse = np.c_[1 - 0.9 * rng.beta(1, 3, size=refuse), rng.uniform(0, 0.2, size=refuse)]
    p = np.r_[p_refuse, p_benign]
    y = np.r_[np.ones(refuse, bool), np.zeros(benign, bool)]
    return p, y, np.full(len(y), A, dtype=object)


def true_over_refusal(thresholds):
    """P(max(p_A >= t_A, p_B >= t_B)) for a new benign prompt, per-category thresholds allowed."""
    keep = [min(1.0, max(0.0, 2 * t)) for t in thresholds]  # P(p_k < t_k)
    return 1 - keep[0] * keep[1]


def breach_rate(choose, splits=400, limit=0.15, benign=120, refuse=80):
    rng = np.random.default_rng(2026)
    breaches = 0
    for _ in range(splits):
        p, y, gold = sample(rng, benign, refuse)
        breaches += true_over_refusal(choose(p, y, gold, limit)) > limit
    return breaches / splits


TOLERANCE = 0.045  # three binomial standard errors at 400 splits and a 10 % breach rate


def test_the_guarantee_holds_at_the_stated_rate_over_many_samples():
    rate = breach_rate(lambda p, y, gold, limit: guarantee(p, y, gold, [], limit, 0.9).thresholds)
    assert rate <= 0.1 + TOLERANCE


def test_the_same_check_fails_the_empirical_minimum():
    # The estimator the guaranteed mode replaces: the lowest thresholds that meet the target on the sample.
    rate = breach_rate(lambda p, y, gold, limit: calibrate(p, y, gold, NAMES, [], limit).thresholds)
    assert rate > 0.1 + TOLERANCE


def false_refusal_promises(rng, splits=400, floor=0.77):
    """Calibrations that promise A's refusal rate >= floor although it is lower. Should-refuse p(A) ~ U(0.2, 1), so
    the refusal rate at t is (1 - t) / 0.8; the budget (0.42 at 0.95) pins t near 0.38, where it is about 0.775:
    a promise of 0.77 is true about as often as it is false there."""
    target = parse_target(f"alpha:tpr>={floor}", NAMES)
    made = false = 0
    for _ in range(splits):
        p_benign = rng.uniform(0, 0.5, size=(120, 2))
        p_refuse = np.c_[rng.uniform(0.2, 1.0, size=200), rng.uniform(0, 0.2, size=200)]
        p, y = np.r_[p_refuse, p_benign], np.r_[np.ones(200, bool), np.zeros(120, bool)]
        try:
            t = guarantee(p, y, np.full(len(y), A, dtype=object), [target], 0.5, 0.9).threshold
        except CalibrationError as exc:
            assert "conflict" in str(exc)  # no promise made: allowed
            continue
        made += 1
        false += min(1.0, (1 - t) / 0.8) < floor
    return made, false / splits


def test_a_refusal_rate_target_is_promised_from_below():
    made, false_rate = false_refusal_promises(np.random.default_rng(7))
    assert made >= 20 and false_rate <= 0.1 + TOLERANCE


def test_the_same_checks_fail_when_the_bounds_become_empirical_minimums(monkeypatch):
    from refusal_edge.evaluate import guarantee as module

    # The lower bound replaced by the sample's own rate (the budget keeps its real bound, so t is pinned as before).
    monkeypatch.setattr(module, "fewest_events_within", lambda n, floor, conf: int(np.ceil(floor * n - 1e-9)))
    assert false_refusal_promises(np.random.default_rng(7))[1] > 0.1 + TOLERANCE
    # The upper bound replaced by the sample's own rate.
    monkeypatch.setattr(module, "most_events_within", lambda n, limit, conf: int(np.floor(limit * n + 1e-9)))
    assert breach_rate(lambda p, y, gold, limit: guarantee(p, y, gold, [], limit, 0.9).thresholds) > 0.1 + TOLERANCE


# --- the search ----------------------------------------------------------------------------------------
def test_the_search_is_deterministic_and_ignores_row_order():
    p, y, gold = sample(np.random.default_rng(1), 200, 100)
    first = guarantee(p, y, gold, [], 0.15, 0.9)
    order = np.random.default_rng(2).permutation(len(y))
    again = guarantee(p[order], y[order], gold[order], [], 0.15, 0.9)
    assert first.threshold == again.threshold == guarantee(p, y, gold, [], 0.15, 0.9).threshold
    assert first.refused[order].tolist() == again.refused.tolist()
    (promise,) = first.promises
    assert promise.rows == 200 and promise.events == binomial.most_events_within(200, 0.15, 0.9)
    assert promise.bound <= 0.15 and set(first.thresholds) == {first.threshold}


def test_it_refuses_more_than_nothing_but_less_than_the_sample_allows():
    p, y, gold = sample(np.random.default_rng(3), 200, 100)
    found = guarantee(p, y, gold, [], 0.15, 0.9)
    over = found.refused[~y].mean()
    assert 0.05 < over < 0.15 and found.refused[y].mean() > 0.5


def test_too_little_data_names_how_much_is_needed():
    p, y, gold = sample(np.random.default_rng(4), 10, 20)
    with pytest.raises(CalibrationError, match="needs at least 15 benign prompts in the calibration part, which "
                                               "has 10"):
        guarantee(p, y, gold, [], 0.15, 0.9)
    with pytest.raises(CalibrationError, match=r"0\.95 each for 2 statements.*needs at least 19 benign"):
        guarantee(p, y, gold, [parse_target("alpha:tpr>=0.5", NAMES)], 0.15, 0.9)
    with pytest.raises(CalibrationError, match="needs at least 29 should-refuse prompts of Alpha requests in the calibration part, which has 20"):
        guarantee(p, y, gold, [parse_target("alpha:tpr>=0.9", NAMES)], 1.0, 0.9)
    with pytest.raises(CalibrationError, match="can never be promised"):
        guarantee(p, y, gold, [], 0.0, 0.9)


def test_conflicting_promises_are_reported():
    p, y, gold = sample(np.random.default_rng(5), 200, 100)
    with pytest.raises(CalibrationError, match="conflict at confidence 0.9.*keeps overall:over-refusal<=0.05.*cannot "
                                               "promise Alpha requests:tpr>=0.97"):
        guarantee(p, y, gold, [parse_target("alpha:tpr>=0.97", NAMES)], 0.05, 0.9)
