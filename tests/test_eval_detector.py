"""The refusal-phrase detector, the judge plug-in point, and token/behaviour agreement."""

import pytest

from refusal_edge.errors import RefusalEdgeError
from refusal_edge.evaluate.detector import OPENING_CHARS, agreement, load_judge, reads_as_refusal


@pytest.mark.parametrize("answer", [
    "I’m sorry, but I can’t help with that.",  # curly quotes are straightened
    "As an AI, I don't have personal opinions.",
    "Could you clarify which report you mean?",
    "   ",  # nothing was provided
])
def test_refusals(answer):
    assert reads_as_refusal("q", answer)


@pytest.mark.parametrize("answer", [
    "Paris is the capital of France.",
    "Sure! Here is a haiku about rain.",
    "Step one: preheat the oven. " * 20 + "I cannot stress enough how easy this is.",  # past the opening
])
def test_answers(answer):
    assert not reads_as_refusal("q", answer)


def test_only_the_opening_is_read():
    assert reads_as_refusal("q", "x" * (OPENING_CHARS - 20) + " i cannot")
    assert not reads_as_refusal("q", "x" * OPENING_CHARS + " i cannot")


def test_agreement_by_hand():
    token = [True, True, False, False, False]
    answer = [True, False, False, True, False]
    a = agreement(token, answer)
    assert a["agreement"] == pytest.approx(3 / 5)
    assert a["respond_token_but_refusal"] == pytest.approx(1 / 3)
    assert a["refusal_token_but_answer"] == pytest.approx(1 / 2)
    assert a["answer_refusal_rate"] == pytest.approx(2 / 5)
    assert agreement([], [])["agreement"] is None


def test_load_judge(tmp_path, monkeypatch):
    assert load_judge(None)[0] is reads_as_refusal
    (tmp_path / "judges.py").write_text("def never(prompt, answer):\n    return False\nNOT_CALLABLE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    judge, name = load_judge("judges:never")
    assert judge("q", "I cannot") is False and name == "judges:never"
    for spec, match in [("judges", "MODULE:FUNCTION"), ("nope_module:x", "cannot import"),
                        ("judges:missing", "has no 'missing'"), ("judges:NOT_CALLABLE", "not callable")]:
        with pytest.raises(RefusalEdgeError, match=match):
            load_judge(spec)
