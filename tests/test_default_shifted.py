"""The default model's shifted validation split: disjoint from training data, held-out subcategories kept out
of every training split, and the figures and threshold choice computed from it."""

import json
import re

import numpy as np
import pytest

from refusal_edge.convert.default_recipe import blunt_refusals, minimal_pairs, prompts, train_extra, train_more
from refusal_edge.convert.default_recipe import data, shifted, with_material
from refusal_edge.convert.default_recipe.data import (HELDOUT_SUBCATEGORIES, acknowledging_chats, build_examples,
                                                      insisting_chats, load_splits, pair_chats)
from refusal_edge.convert.default_recipe.everyday import everyday, split as split_everyday
from refusal_edge.convert.default_recipe.shifted import (RESPOND, Item, blunt_style, coconot_style, everyday_style,
                                                                 insisting_style, pair_style, summarize, validation_prompts, xstest_style)
from refusal_edge.metadata import CATEGORIES


def _training_data() -> tuple[list[dict], set[str]]:
    """(labelled training rows: every refused prompt with its category, and the probes with theirs; the answered
    training prompts) of every round."""
    pair_refusals, pair_answers = minimal_pairs.pair_rows(0)
    rows = (prompts.synthetic_refusals() + train_extra.extra_refusals(0) + train_more.more_refusals(0)
            + blunt_refusals.blunt_refusals(0) + pair_refusals
            + [{"category": label, "prompt": q} for q, label in prompts.PROBES])
    answered = (set(prompts.benign_prompts()) | set(pair_answers) | set(train_extra.extra_benign(0))
                | set(train_more.more_benign(0)) | {i.prompt for i in split_everyday(everyday(0, with_advice=True), 0)[0]}
                | set(data.MOVING_ON) | {i.prompt for r in with_material.ROUNDS for i in with_material.trained(0, r)})
    return rows, answered


def _training_prompts() -> set[str]:
    rows, answered = _training_data()
    return {r["prompt"] for r in rows} | answered


def _norm(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def test_validation_prompts_never_appear_in_training_prompts():
    val = validation_prompts()
    assert len(val) >= 250
    train = {_norm(q) for q in _training_prompts()}
    # also catches a validation prompt hidden inside a training format wrapper (for prompts long enough that being
    # inside another means something: "sup" is inside "supply")
    leaked = [q for q in val if _norm(q) in train or len(_norm(q)) >= 12 and any(_norm(q) in t for t in train)]
    assert leaked == []


_FRAME_WORDS = set("""a an the to of in on for and or is are was were be my me i you your it this that what how do does did
can could would will with from at by please tell give write show make help about so as it's his her their our we they he
she them him i'm i'd u hey like some just curious trying get something done thanks quick question out here step
need today pls explain which who why when where""".split())


def _content_words(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {w[:-1] if w.endswith("s") and len(w) > 3 else w for w in words if w not in _FRAME_WORDS}


def _labelled_training_prompts() -> dict[str, set[str]]:
    """decision -> training prompts (the refused ones by category, the answered ones as RESPOND)."""
    rows, answered = _training_data()
    out = {c: {r["prompt"] for r in rows if r["category"] == c} for c in (*CATEGORIES, RESPOND)}
    out[RESPOND] |= answered - set().union(*(out[c] for c in CATEGORIES))
    return out


def test_no_validation_prompt_is_a_reworded_training_prompt_with_the_same_decision():
    # Exact copies are caught above; a validation prompt that keeps a training prompt's content words and its decision
    # ("How do I launder the money from my drug sales?" beside "How can I launder money from my drug sales?") flatters
    # the figures just as much. Opposite decisions are allowed: such pairs are what the look-alikes test.
    by_word: dict[tuple[str, str], list[set[str]]] = {}  # (decision, word) -> training prompts' words holding it
    for label, ps in _labelled_training_prompts().items():
        for words in map(_content_words, ps):
            for w in words:
                by_word.setdefault((label, w), []).append(words)
    items = (coconot_style([], []) + xstest_style() + blunt_style()["blunt"] + pair_style()["pairs"]
             + [i for i in everyday_style()["everyday"] if not i.group.startswith(("frame:", "style:"))]
             + [i for i in shifted.material_style()["material"] if i.group.startswith("kind:")])
    copies = []
    for item in items:
        words = _content_words(item.prompt)
        near = (len(words & t) >= 3 and len(words & t) / len(words | t) >= 0.6
                for w in words for t in by_word.get((item.label, w), ()))
        if any(near):
            copies.append(item.prompt)
    assert copies == []


def test_blunt_refusals_hold_out_whole_cores_and_frames():
    rows, held = blunt_refusals.blunt_refusals(0), blunt_refusals.heldout_blunt(0)
    assert rows == blunt_refusals.blunt_refusals(0) and held == blunt_refusals.heldout_blunt(0)
    train_cores, held_cores = blunt_refusals.split_cores(0)
    for category in CATEGORIES:
        assert len(held_cores[category]) >= 2 and not set(held_cores[category]) & set(train_cores[category])
        assert any(r["category"] == category for r in rows) and any(c == category for _, c, _ in held)
    trained = {_norm(r["prompt"]) for r in rows}
    assert {family for _, _, family in held} == {"frame:would-you", "frame:im-trying", "style:terse"}
    assert not {_norm(p) for p, _, _ in held} & trained
    # no held-out core reaches training in any frame or style
    assert [c for cores in held_cores.values() for c in cores if any(_norm(c) in t for t in trained)] == []


def test_minimal_pairs_hold_out_whole_pairs_in_phrasings_training_never_uses():
    refusals, answered = minimal_pairs.pair_rows(0)
    assert (refusals, answered) == minimal_pairs.pair_rows(0) and len(refusals) == len(answered)
    train, held = minimal_pairs.split_pairs(0)
    for kind, pairs in minimal_pairs.PAIRS.items():
        assert len(held[kind]) >= 2 and sorted(held[kind] + train[kind]) == sorted(pairs)
    trained = {_norm(p) for p in [r["prompt"] for r in refusals] + answered}
    held_halves = [half for pairs in held.values() for pair in pairs for half in pair]
    assert [h for h in held_halves if any(_norm(h.rstrip("?.!")) in t for t in trained)] == []
    validation = minimal_pairs.heldout_pairs(0)
    assert not {_norm(p) for p, _, _ in validation} & trained
    assert {family.split("/")[1] for _, _, family in validation} == set(minimal_pairs.HELD_PHRASINGS)
    # both halves of a pair in one phrasing: the way of asking says nothing about the decision
    phrased = {(minimal_pairs.phrase(r, t), minimal_pairs.phrase(a, t))
               for pairs in train.values() for r, a in pairs for t in minimal_pairs.TRAIN_PHRASINGS}
    assert all((row["prompt"], prompt) in phrased for row, prompt in zip(refusals, answered))


def test_pair_chats_teach_both_orders():
    refusals = [{"category": CATEGORIES[3], "subcategory": "minimal pair", "prompt": "How do I build a pipe bomb?"}]
    chats = pair_chats(refusals, [("How do I fix a leaking pipe?", "Turn off the water first.")], 0)
    assert [(c.prompt, c.decision) for c in chats] == [("How do I fix a leaking pipe?", RESPOND),
                                                       ("How do I build a pipe bomb?", CATEGORIES[3])]
    assert chats[0].history[1][2] == CATEGORIES[3] and chats[1].history == (
        ("user", "How do I fix a leaking pipe?", None), ("assistant", "Turn off the water first.", RESPOND))


def test_training_formats_keep_every_prompt_and_add_a_variant():
    benign = train_extra.extra_benign(0)
    base = train_extra.SAFE + train_extra.LOOKALIKES
    assert benign[::2] == base and all(a != b for a, b in zip(benign[::2], benign[1::2]))
    assert benign == train_extra.extra_benign(0)  # deterministic for a seed
    refusals = train_extra.extra_refusals(0)
    assert {r["category"] for r in refusals} == {CATEGORIES[3]}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_heldout_subcategories_are_in_no_training_or_random_validation_split(tmp_path):
    held = HELDOUT_SUBCATEGORIES["original"][0]
    original = [{"id": f"o{i}", "category": CATEGORIES[3], "subcategory": sub, "prompt": f"refuse {sub} {i}"}
                for sub in (held, "privacy violations") for i in range(10)]
    held_c = HELDOUT_SUBCATEGORIES["contrast"][0]
    contrast = [{"id": f"c{i}", "category": CATEGORIES[3], "subcategory": sub, "prompt": f"fine {sub} {i}",
                 "chosen": "ok"} for sub in (held_c, "privacy violations") for i in range(10)]
    _write(tmp_path / "o.jsonl", original)
    _write(tmp_path / "c.jsonl", contrast)
    splits = load_splits(tmp_path / "o.jsonl", tmp_path / "c.jsonl", 0)
    seen = splits.refusal_train + splits.refusal_val + splits.contrast_train + splits.contrast_val
    assert len(seen) == 20 and {r["subcategory"] for r in seen} == {"privacy violations"}
    trained = {e.prompt for e in build_examples(splits, [], 0)}
    items = coconot_style(original, contrast)
    heldout = [i for i in items if i.group.startswith("coconot")]
    assert len(heldout) == 20 and not trained & {i.prompt for i in heldout}
    assert {i.label for i in heldout if i.group.startswith("coconot-heldout-contrast")} == {RESPOND}


def test_the_final_fit_trains_on_heldout_subcategories_but_keeps_the_random_validation_split(tmp_path):
    held = HELDOUT_SUBCATEGORIES["original"][0]
    original = [{"id": f"o{i}", "category": CATEGORIES[3], "subcategory": sub, "prompt": f"refuse {sub} {i}"}
                for sub in (held, "privacy violations") for i in range(10)]
    contrast = [{"id": f"c{i}", "category": CATEGORIES[3], "subcategory": "privacy violations",
                 "prompt": f"fine {i}", "chosen": "ok"} for i in range(10)]
    _write(tmp_path / "o.jsonl", original)
    _write(tmp_path / "c.jsonl", contrast)
    held_out = load_splits(tmp_path / "o.jsonl", tmp_path / "c.jsonl", 0)
    final = load_splits(tmp_path / "o.jsonl", tmp_path / "c.jsonl", 0, keep_heldout=True)
    assert final.refusal_val == held_out.refusal_val and final.contrast_val == held_out.contrast_val
    added = [r for r in final.refusal_train if r not in held_out.refusal_train]
    assert len(added) == 7 and {r["subcategory"] for r in added} == {held}  # 10 rows, 30 % kept for validation


def test_round_three_prompts_cover_their_families_as_written_and_wrapped():
    refusals = train_more.more_refusals(0)
    assert refusals == train_more.more_refusals(0)
    by_category = {c: [r for r in refusals if r["category"] == c] for c in CATEGORIES}
    assert all(by_category.values())
    written = [r["prompt"] for r in refusals[::2]]
    assert all(a["prompt"] != b["prompt"] for a, b in zip(refusals[::2], refusals[1::2]))
    assert set(train_more.FALSE_PREMISES) <= set(written)
    benign = train_more.more_benign(0)
    assert not set(benign) & {r["prompt"] for r in refusals}  # no prompt is both refused and answered


def test_insisting_asks_every_should_refuse_prompt_again_after_its_own_refusal_and_after_another():
    items = insisting_style()["insisting"]
    refuse = shifted.hand_written_refusals()
    assert len(items) == 2 * len(refuse) and all(i.should_refuse for i in items)
    again = [i for i in items if i.group.startswith("asked-again/")]
    assert [(i.prompt, i.label) for i in again] == [(i.prompt, i.label) for i in refuse]
    assert all(i.before[0]["content"] == i.prompt and i.before[1]["refusal_token"] == f"[{i.label}]" for i in again)
    other = [i for i in items if i.group.startswith("after-refusal/")]
    assert all(i.before[0]["content"] != i.prompt for i in other)


def test_insisting_chats_hold_the_refusal_when_the_user_insists():
    rows = [{"category": CATEGORIES[k % 5], "subcategory": "", "prompt": f"request {k}"} for k in range(30)]
    twins = rows[:4]
    chats = insisting_chats(rows, twins, seed=0, n=12)
    assert len(chats) == 12 + 4 and chats == insisting_chats(rows, twins, seed=0, n=12)
    assert all(c.decision != RESPOND and c.history[1][2] in CATEGORIES for c in chats)
    first = [c.history[0][1] for c in chats[:12]]
    assert len(set(first)) == 12  # n different refused requests
    insisted, moved_on = chats[0:12:3] + chats[1:12:3], chats[2:12:3]
    # the user insists on the refused request: the decision is its category, whatever the words around it
    assert all(c.decision == c.history[1][2] for c in insisted)
    assert all(c.prompt in {w.format(p=c.history[0][1]) for w in data.INSISTING} for c in chats[0:12:3])
    assert all(c.prompt in data.BARE_INSISTING for c in chats[1:12:3])
    assert all(c.prompt.startswith("request ") and c.response for c in moved_on)
    # each minimal pair's refused half is asked again as it was, and refused again
    assert [(c.history[0][1], c.prompt, c.decision) for c in chats[12:]] == [
        (r["prompt"], r["prompt"], r["category"]) for r in twins]


def test_acknowledging_chats_answer_what_people_say_after_a_refusal():
    rows = [{"category": CATEGORIES[k % 5], "subcategory": "", "prompt": f"request {k}"} for k in range(30)]
    turns = [("Hi", "Hello! How can I help?"), ("Thanks!", None)]
    chats = acknowledging_chats(rows, turns, seed=0, repeats=2)
    assert chats == acknowledging_chats(rows, turns, seed=0, repeats=2)
    assert [c.prompt for c in chats] == ["Hi", "Thanks!"] + [w for w in data.MOVING_ON for _ in range(2)]
    # after a refused turn, answered: with the turn's own answer, or one that moves on (never thanks for a refusal)
    assert all(c.decision == RESPOND and c.history[1][2] in CATEGORIES for c in chats)
    assert chats[0].response == "Hello! How can I help?"
    assert all(c.response in data.MOVED_ON_ANSWERS for c in chats[1:])
    # none is a word of insistence, which insisting_chats teaches to refuse
    insisting = {_norm(w.format(p="")) for w in data.INSISTING + data.BARE_INSISTING}
    assert not {_norm(w) for w in data.MOVING_ON} & insisting


def test_insistence_in_validation_is_worded_as_no_training_chat_is():
    trained = {_norm(w.format(p="")) for w in data.INSISTING + data.BARE_INSISTING}
    held = {_norm(w.format(p="")) for w in shifted.INSISTING_HELD_OUT + shifted.BARE_INSISTING_HELD_OUT}
    assert not trained & held and all(h not in t and t not in h for h in held for t in trained if t)
    items = shifted.insisted_style()["insisted"]
    refuse = shifted.hand_written_refusals()
    assert len(items) == 2 * len(refuse) and all(i.should_refuse for i in items)
    # the request before is the one insisted on, refused with its own category
    assert all(i.before[1]["refusal_token"] == f"[{i.label}]" for i in items)
    assert all(r.prompt in i.prompt and i.before[0]["content"] == r.prompt for i, r in zip(items, refuse))


def test_summarize_counts_refusals_over_refusals_auroc_and_groups():
    items = [Item("a", CATEGORIES[3], "g1"), Item("b", CATEGORIES[0], "g1"), Item("c", RESPOND, "g2"),
             Item("d", RESPOND, "g2")]
    s = summarize(items, np.array([0.9, 0.4, 0.5, 0.1]), [CATEGORIES[3], CATEGORIES[3], None, CATEGORIES[1]])
    assert s["refusal_rate"] == 1.0 and s["over_refusal"] == 0.5 and s["right_category"] == 0.5
    assert s["auroc"] == pytest.approx(0.75)
    assert s["groups"] == {"g1": {"n": 2, "refused": 1.0}, "g2": {"n": 2, "refused": 0.5}}
    # which category a wrongly named refusal got: "b" (Humanizing) was refused as Safety; "d" is a look-alike
    assert s["wrong_category"] == {f"{CATEGORIES[0]} -> {CATEGORIES[3]}": 1}


def test_xstest_style_has_every_type_and_labels():
    items = xstest_style()
    kinds = {i.group for i in items}
    assert {"safe/homonyms", "safe/privacy_fictional", "safe/nonsense_discrimination", "unsafe/privacy"} <= kinds
    assert all((i.label == RESPOND) == i.group.startswith("safe/") for i in items)


def test_probe_logistic_regression_separates_a_linear_boundary_and_ranks_held_out_points():
    from refusal_edge.convert.default_recipe.calibrate import auroc
    from refusal_edge.convert.default_recipe.probe_ceiling import fit_logistic

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))
    y = (x[:, 0] - 0.5 * x[:, 3] + 0.3 * rng.normal(size=400) > 0.8).astype(float)  # imbalanced classes
    predict = fit_logistic(x[:300], y[:300], l2=1.0)
    s = predict(x[300:])
    assert auroc(s[y[300:] == 1], s[y[300:] == 0]) > 0.95
    noise = fit_logistic(x[:300], rng.permutation(y[:300]), l2=1.0)(x[300:])
    assert auroc(noise[y[300:] == 1], noise[y[300:] == 0]) < 0.75


def test_category_probe_tells_clusters_apart_and_not_shuffled_labels():
    from refusal_edge.convert.default_recipe.probe_ceiling import category_probe

    rng = np.random.default_rng(1)
    centres = rng.normal(scale=3.0, size=(4, 6))
    labels = [CATEGORIES[k] for k in rng.integers(0, 4, size=300)]
    x = np.stack([centres[CATEGORIES.index(lab)] for lab in labels]) + rng.normal(size=(300, 6))
    predict = category_probe(x[:200], labels[:200], l2=1.0)
    assert np.mean([a == b for a, b in zip(predict(x[200:]), labels[200:])]) > 0.9
    shuffled = category_probe(x[:200], list(rng.permutation(labels[:200])), l2=1.0)
    assert np.mean([a == b for a, b in zip(shuffled(x[200:]), labels[200:])]) < 0.5


def test_requests_with_their_material_hold_out_a_kind_and_a_layout_and_none_of_everydays_pasted_code():
    items = with_material.with_material(0)
    assert items == with_material.with_material(0) and len({i.prompt for i in items}) == len(items)
    train, held = with_material.split(items)
    assert len(train) >= 80 and len(held) >= 40
    assert {i.kind for i in train} == set(with_material.MATERIAL) - {"table"}
    assert "here-is" not in {i.layout for i in train} and "here-is" in {i.layout for i in held}
    assert all(i.kind == "table" or i.layout == "here-is" for i in held)
    # round 14 held out the material above the request instead, with four materials for each request
    train_14, held_14 = with_material.split(with_material.with_material(0, per_task=4), with_material.HELDOUT_ROUND_14)
    assert "above" not in {i.layout for i in train_14} and {i.kind for i in held_14} >= {"table", "python"}
    # what train_default trains on in each round (none before round 14)
    assert [with_material.trained(0, r) for r in (13, 14, 15)] == [[], train_14, train]
    # every prompt holds its material, and code is never wrapped in quotation marks
    assert all(any(m in i.prompt for m in with_material.MATERIAL[i.kind]) for i in items)
    assert not [i for i in items if i.kind in with_material.CODE_KINDS and i.layout == "quoted"]
    # everyday.py's pasted code is a family held out of training: none of its snippets or requests is used here
    from refusal_edge.convert.default_recipe import everyday as ev
    requests = [t.split("{text}")[0].strip(" :\n") for t in ev.CODE_TASKS.values()]
    assert not [i for i in items if any(c in i.prompt for c in ev.PASTED_CODE) or any(r in i.prompt for r in requests)]
    # the measured set is the held-out part, alone and after a refused turn
    sets = shifted.material_style()
    assert [i.prompt for i in sets["material"]] == [i.prompt for i in held]
    assert all(i.before and i.label == RESPOND for i in sets["material_after_refusal"])


def test_likeliest_right_names_the_likeliest_category_whatever_a_policy_would_refuse():
    from refusal_edge.convert.default_recipe.calibrate import likeliest_right

    names = ("A", "B", "C")
    p = np.array([[0.01, 0.02, 0.0], [0.5, 0.1, 0.3], [0.0, 0.1, 0.2]])  # the first is far below any threshold
    assert likeliest_right(p, names, ["B", "A", "A"]) == pytest.approx(2 / 3)
    assert np.isnan(likeliest_right(np.zeros((0, 3)), names, []))
