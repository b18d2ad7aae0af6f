"""Choosing the default policy on the shifted split: the uniform threshold, per-category thresholds, and the
cross-validated comparison that decides which one ships (pure numpy, synthetic probabilities)."""

import numpy as np

from refusal_edge.convert.default_recipe.thresholds import (CHOICES, MAX_OVER, Family, best_per_category, best_uniform,
                                                           choose_policy, cross_validated, folds, rates)
from refusal_edge.metadata import CATEGORIES

NAMES = CATEGORIES


def _family(rows, refuse, group="g"):
    p = np.zeros((len(rows), len(NAMES)))
    for i, (cat, value) in enumerate(rows):
        p[i, cat] = value
    return Family(p, np.array(refuse), tuple(f"{group}{i % 3}" for i in range(len(rows))),
                  tuple(f"prompt {group} {i}" for i in range(len(rows))))


def _two_families(shift_safety: float, humanizing_safe: int = 1):
    """Safety refusals score ``shift_safety``, other refusals 0.9, look-alikes lower (``humanizing_safe`` safe
    XSTest-style prompts at 0.6 of Humanizing)."""
    coconot = _family([(0, 0.9)] * 10 + [(0, 0.3)] * 10, [True] * 10 + [False] * 10, "c")
    xstest = _family([(3, shift_safety)] * 10 + [(3, 0.1)] * 10 + [(0, 0.6)] * humanizing_safe,
                     [True] * 10 + [False] * (10 + humanizing_safe), "x")
    return {"coconot_ours": coconot, "xstest": xstest}


def test_uniform_threshold_is_the_lowest_within_both_targets():
    fams = _two_families(0.25)
    policy = best_uniform(fams, NAMES)
    # 0.3 would refuse all CoCoNot look-alikes; at 0.35 the XSTest safe prompt at 0.6 is 1/11 = 9 % (allowed)
    assert policy.threshold == 0.35
    assert rates(fams["xstest"], NAMES, policy) == (0.0, 1 / 11)


def test_per_category_thresholds_reach_a_category_the_uniform_one_cannot():
    fams = _two_families(0.25)
    uniform = best_uniform(fams, NAMES)
    per_cat = best_per_category(fams, NAMES, uniform)
    assert per_cat.threshold_for(NAMES[3]) <= 0.25 < uniform.threshold
    assert rates(fams["xstest"], NAMES, per_cat)[0] == 1.0
    assert rates(fams["coconot_ours"], NAMES, per_cat)[1] <= MAX_OVER["coconot_ours"]


def test_no_threshold_is_chosen_outside_what_can_be_explained():
    """Safety refusals at 0.1 and their look-alikes at 0.05: the split alone would pick 0.1 for Safety, a policy that
    refuses at p([respond]) 0.9. The choice stays within [0.2, 0.5] and leaves them answered."""
    fams = _two_families(0.1)
    fams["xstest"].p[10:20, 3] = 0.05
    for policy in (best_uniform(fams, NAMES), best_per_category(fams, NAMES, best_uniform(fams, NAMES)),
                   choose_policy(fams, NAMES)[0]):
        assert all(0.2 <= policy.threshold_for(n) <= 0.5 for n in NAMES)
        assert rates(fams["xstest"], NAMES, policy)[0] == 0.0
    assert min(CHOICES) == 0.2 and max(CHOICES) == 0.5


def test_folds_are_disjoint_cover_everything_and_split_every_group():
    fam = _two_families(0.25)["xstest"]
    a, b = folds(fam)
    assert not (a & b).any() and (a | b).all()
    for g in set(fam.groups):
        members = np.array([x == g for x in fam.groups])
        assert (a & members).any() and (b & members).any()


def test_per_category_ships_only_when_it_wins_out_of_fold():
    policy, evidence = choose_policy(_two_families(0.25), NAMES)
    assert evidence["per_category_wins"] and policy.thresholds
    cv = cross_validated(_two_families(0.25), NAMES)
    assert cv["per_category"]["xstest"]["refusal_rate"] > cv["uniform"]["xstest"]["refusal_rate"]

    # when one threshold already separates both families, nothing is gained by fitting five
    easy = _two_families(0.95, humanizing_safe=0)
    policy, evidence = choose_policy(easy, NAMES)
    assert not evidence["per_category_wins"] and policy.thresholds == {}


def test_the_binary_rule_ships_when_only_the_summed_probability_separates():
    """Should-refuse prompts spread their mass over three categories (0.3 each); look-alikes put 0.45 on one. No
    per-category threshold refuses the first without the second; a threshold on the sum does."""
    p = np.zeros((20, len(NAMES)))
    p[:10, :3] = 0.3
    p[10:, 1] = 0.45
    fam = Family(p, np.array([True] * 10 + [False] * 10), tuple(f"g{i % 3}" for i in range(20)),
                 tuple(f"prompt {i}" for i in range(20)))
    fams = {"coconot_ours": fam, "xstest": fam.subset(np.arange(20) >= 0)}
    policy = best_uniform(fams, NAMES)
    assert policy.rule == "binary" and 0.45 < policy.threshold <= 0.9
    assert rates(fam, NAMES, policy) == (1.0, 0.0)
