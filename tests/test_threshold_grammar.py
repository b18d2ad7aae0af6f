"""One grammar for a threshold or a bias, wherever it is typed: the CLI's --threshold/--bias and chat's /threshold
and /bias accept exactly the same spellings, set the same policy, and refuse the same way (arguments.policy_setting)."""

import pytest

from refusal_edge import Policy
from refusal_edge.arguments import PolicyOptions
from refusal_edge.cli_chat import ChatSession
from refusal_edge.errors import PolicyError
from refusal_edge.metadata import CATEGORIES
from refusal_edge.sampling import SamplingParams

BASE = Policy(rule="per-category", threshold=0.5, thresholds={"Humanizing requests": 0.2})
SPELLINGS = ["safety=0.3", "safety 0.3", "Requests with safety concerns=0.25", "Requests with safety concerns 0.25",
             "  humanizing =  0.1 ", "incomplete\t0.4", "0.35", " 0.35 ", "=0.5", "safety=high", "safety high",
             "cooking=0.3", "requests=0.3", "safety", "", "safety=1.5", "respond=0.2", "safety=nan"]
BIAS_SPELLINGS = ["respond=-1.5", "respond -1.5", "safety 2", "0.5", "safety=lots", "=1", "safety=101"]


class _Model:
    categories = CATEGORIES


def chat_sets(command: str, capsys) -> tuple[Policy, str]:
    session = ChatSession(_Model(), BASE, SamplingParams(), None, color=False)
    session.command(command)
    captured = capsys.readouterr()
    return session.policy, captured.err.strip()


def built(**words) -> Policy:
    return PolicyOptions(**words).build(CATEGORIES, BASE)


def cli_sets(kind: str, item: str) -> tuple[Policy, str]:
    try:
        words = {f"{kind}s" if kind == "threshold" else "biases": (item,)}
        return built(**words), ""
    except PolicyError as exc:
        return BASE, f"error: {exc}"


@pytest.mark.parametrize("kind, item", [*(("threshold", s) for s in SPELLINGS), *(("bias", s) for s in BIAS_SPELLINGS)])
def test_chat_accepts_exactly_what_the_option_accepts(kind, item, capsys):
    expected, cli_error = cli_sets(kind, item)
    policy, chat_error = chat_sets(f"/{kind} {item}", capsys)
    assert policy == expected
    # The same error, naming the command the user typed instead of the option.
    assert chat_error == cli_error.replace(f"--{kind}", f"/{kind}"), (chat_error, cli_error)


def test_both_spellings_set_a_category_and_a_bare_value_the_default():
    assert built(thresholds=("safety 0.3",)).thresholds["Requests with safety concerns"] == 0.3
    assert built(thresholds=("safety=0.3",)).thresholds["Requests with safety concerns"] == 0.3
    assert built(thresholds=("0.1",)).threshold == 0.1
    assert built(biases=("respond 2",)).biases == {"respond": 2.0}


@pytest.mark.parametrize("kind, item, words", [
    ("threshold", "=0.5", "usage: --threshold CATEGORY VALUE, or CATEGORY=VALUE, or VALUE (the default threshold)"),
    ("bias", "0.5", "usage: --bias CATEGORY VALUE, or CATEGORY=VALUE; got '0.5'"),
    ("threshold", "safety=high", "--threshold 'safety=high': 'high' is not a number"),
    ("threshold", "cooking=0.3", "unknown category 'cooking'"),
    ("threshold", "safety=1.5", "not a probability"),
])
def test_what_is_refused_says_why(kind, item, words):
    assert words in cli_sets(kind, item)[1]


def test_chat_echoes_what_it_set(capsys):
    assert chat_sets("/threshold safety 0.3", capsys)[0].thresholds["Requests with safety concerns"] == 0.3
    session = ChatSession(_Model(), BASE, SamplingParams(), None, color=False)
    session.command("/threshold 0.2")
    session.command("/bias respond=-1")
    out = capsys.readouterr().out
    assert "default threshold: 0.2" in out and "respond: bias -1" in out
