"""A window over a long conversation (model.fit): the oldest turns left out, never a system or current message."""

import pytest

from refusal_edge import PromptTooLongError, RefusalModel
from conftest import THREADS

N_CTX = 256  # the tiny_model fixture's context
SYSTEM = {"role": "system", "content": "you are a helpful assistant and you answer briefly"}


def long_chat(turns: int) -> list[dict]:
    """A system prompt, ``turns`` turns of about 30 tokens each, and the current message."""
    history = [SYSTEM]
    for i in range(turns):
        history += [{"role": "user", "content": f"turn {i}: please tell me a story about the sea and the sky"},
                    {"role": "assistant", "content": f"answer {i}: the quick brown fox jumps over the lazy dog"}]
    return [*history, {"role": "user", "content": "and what is the capital of france?"}]


def test_a_conversation_that_fits_is_sent_whole(tiny_model):
    messages = long_chat(1)
    window = tiny_model.fit(messages, 16)
    assert window.messages == messages and window.dropped_turns == window.dropped_messages == 0
    assert window.notice is None
    assert window.prompt_tokens == len(tiny_model.prompt_tokens(messages))


def test_the_oldest_whole_turns_are_left_out_and_no_more(tiny_model):
    messages = long_chat(12)
    assert len(tiny_model.prompt_tokens(messages)) > N_CTX
    window = tiny_model.fit(messages, 32)
    assert window.messages[0] == SYSTEM and window.messages[-1] == messages[-1]
    assert window.messages[1]["role"] == "user"  # whole turns: never a reply without its question
    assert window.dropped_messages == 2 * window.dropped_turns > 0
    assert window.messages[1:] == messages[1 + window.dropped_messages:]
    assert window.prompt_tokens == len(tiny_model.prompt_tokens(window.messages))
    assert window.prompt_tokens + 32 <= N_CTX
    one_turn_more = [SYSTEM, *messages[window.dropped_messages - 1:]]
    assert len(tiny_model.prompt_tokens(one_turn_more)) + 32 > N_CTX  # the fewest turns were left out
    assert window.notice == f"(dropped {window.dropped_turns} earlier turns to fit the 256-token context)"


def test_messages_mode_leaves_out_one_message_at_a_time_as_ollama(tiny_model):
    messages = long_chat(12)
    by_turn, by_message = tiny_model.fit(messages, 0), tiny_model.fit(messages, 0, drop="messages")
    assert by_message.messages[0] == SYSTEM and by_message.messages[-1] == messages[-1]
    assert by_message.dropped_messages in (2 * by_turn.dropped_turns - 1, 2 * by_turn.dropped_turns)
    assert by_message.prompt_tokens < N_CTX
    assert len(tiny_model.prompt_tokens([SYSTEM, *messages[by_message.dropped_messages:]])) >= N_CTX


def test_a_system_prompt_anywhere_survives(tiny_model):
    messages = long_chat(12)
    late_system = {"role": "system", "content": "answer in french"}
    messages.insert(3, late_system)
    window = tiny_model.fit(messages, 32)
    assert window.dropped_turns > 2
    assert window.messages[:2] == [SYSTEM, late_system]


def test_an_answer_budget_as_large_as_the_context_still_leaves_history(tiny_model):
    window = tiny_model.fit(long_chat(12), 10_000)
    assert N_CTX // 2 - 60 < window.prompt_tokens <= N_CTX // 2  # room for at most half the context is kept
    assert len(window.messages) > 2


def test_a_current_message_longer_than_the_context_names_the_option(tiny_model):
    messages = [SYSTEM, {"role": "user", "content": "hi"}, {"role": "user", "content": "the lazy dog " * 200}]
    with pytest.raises(PromptTooLongError, match=r"the current message with the system prompt is \d+ tokens, "
                                                 r"the context holds 256: shorten it or raise n_ctx") as caught:
        tiny_model.fit(messages, 16)
    assert caught.value.naming("--ctx").endswith("raise --ctx")
    with pytest.raises(PromptTooLongError, match="raise --ctx"):
        tiny_model.fit(messages, 16, option="--ctx")


def test_bad_arguments_are_refused(tiny_model):
    with pytest.raises(ValueError, match="drop"):
        tiny_model.fit("hi", drop="oldest")
    with pytest.raises(ValueError, match="max_tokens"):
        tiny_model.fit("hi", -1)


def test_the_decision_on_the_window_equals_a_fresh_decide_on_it(tiny_gguf, tiny_model):
    messages = long_chat(12)
    tiny_model.decide(long_chat(3))  # a cache holding another conversation
    window = tiny_model.fit(messages, 16)
    events = list(tiny_model.stream(window.messages, temperature=0, max_tokens=4))
    with RefusalModel.load(tiny_gguf, n_ctx=N_CTX, n_threads=THREADS) as fresh:
        alone = fresh.decide(window.messages)
    assert events[0].token_id == alone.token_id
    assert events[0].prompt_tokens == alone.prompt_tokens == window.prompt_tokens
    for name, p in alone.probabilities.items():
        assert events[0].probabilities[name] == pytest.approx(p, abs=1e-4)
