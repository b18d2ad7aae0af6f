"""Long conversations on the servers: OpenAI's 400 with the counts unless "truncation": "auto"; Ollama's
chatPrompt window (oldest messages left out, system and latest kept) unless "truncate": false. Also the chat CLI."""

import re

import pytest

from refusal_edge.cli_chat import ChatSession
from refusal_edge.sampling import SamplingParams
from test_window import SYSTEM, long_chat


def _same_decision(payload: dict, decision) -> None:
    assert payload["token"] == decision.token and payload["prompt_tokens"] == decision.prompt_tokens
    for name, p in decision.probabilities.items():
        assert payload["probabilities"][name] == pytest.approx(p, abs=1e-4)


def test_openai_keeps_its_400_with_the_counts(app_client, tiny_model):
    messages = long_chat(12)
    reply = app_client.post("/v1/chat/completions", json={"messages": messages})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    n = len(tiny_model.prompt_tokens(messages))
    assert f"the prompt is {n} tokens, the context holds 256: shorten it or raise refusal-edge serve --ctx" \
        == error["message"]


def test_openai_truncation_auto_decides_on_the_window(app_client, tiny_model):
    messages = long_chat(12)
    reply = app_client.post("/v1/chat/completions", json={"messages": messages, "truncation": "auto",
                                                           "max_tokens": 4, "temperature": 0})
    assert reply.status_code == 200, reply.text
    refusal = reply.json()["refusal"]
    window = tiny_model.fit(messages, 4)
    assert refusal["meta"]["dropped_turns"] == window.dropped_turns > 0
    assert refusal["meta"]["dropped_messages"] == window.dropped_messages
    _same_decision(refusal, tiny_model.decide(window.messages))
    assert app_client.post("/v1/chat/completions", json={"messages": messages, "truncation": "cut"}).status_code == 400


def test_ollama_leaves_out_the_oldest_messages_as_its_chat_prompt_does(app_client, tiny_model):
    messages = long_chat(12)
    reply = app_client.post("/api/chat", json={"model": "tiny", "messages": messages, "stream": False,
                                               "options": {"temperature": 0, "num_predict": 4}})
    assert reply.status_code == 200, reply.text
    window = tiny_model.fit(messages, 0, drop="messages")  # Ollama fits the prompt alone, message by message
    refusal = reply.json()["refusal"]
    assert refusal["meta"]["dropped_messages"] == window.dropped_messages > 0
    assert reply.json()["prompt_eval_count"] == window.prompt_tokens
    _same_decision(refusal, tiny_model.decide(window.messages))


def test_ollama_num_ctx_bounds_the_window(app_client, tiny_model):
    messages = long_chat(12)
    reply = app_client.post("/api/chat", json={"model": "tiny", "messages": messages, "stream": False,
                                               "options": {"num_ctx": 128, "num_predict": 2}})
    assert reply.status_code == 200, reply.text
    assert reply.json()["prompt_eval_count"] == tiny_model.fit(messages, 0, n_ctx=128, drop="messages").prompt_tokens
    assert reply.json()["prompt_eval_count"] < 128


@pytest.mark.parametrize("body, words", [
    ({"messages": long_chat(12), "truncate": False}, "the prompt is"),  # Ollama's switch: no window, an error
    ({"messages": [SYSTEM, {"role": "user", "content": "hi"}, {"role": "user", "content": "hello " * 300}]},
     "the current message with the system prompt is"),
    ({"messages": [{"role": "user", "content": "hello " * 300}], "options": {"num_ctx": 128}}, "options.num_ctx"),
    ({"messages": long_chat(1), "truncate": "yes"}, "'truncate' must be true or false"),
])
def test_ollama_errors_name_the_option(app_client, body, words):
    reply = app_client.post("/api/chat", json={"model": "tiny", "stream": False, **body})
    assert reply.status_code == 400, reply.text
    assert words in reply.json()["error"]
    assert "raise" not in reply.json()["error"] or re.search(r"raise (refusal-edge serve --ctx|options.num_ctx)",
                                                              reply.json()["error"])


def test_a_long_scripted_chat_answers_every_turn_and_keeps_the_system_prompt(tiny_model, capsys):
    sent = []

    class Recording:
        categories = tiny_model.categories
        engine = tiny_model.engine
        fit = staticmethod(tiny_model.fit)

        def stream(self, messages, policy, sampling):
            sent.append(messages)
            return tiny_model.stream(messages, policy, sampling=sampling)

    session = ChatSession(Recording(), tiny_model.default_policy, SamplingParams(temperature=0, max_tokens=8),
                          SYSTEM["content"], color=False)
    lines = [f"message {i}: please tell me a story about the sea and the sky, and the fox" for i in range(10)]
    for line in lines:
        session.handle(line)
    out = capsys.readouterr()
    assert "error" not in out.err
    assert len(sent) == len(lines)  # every turn answered
    assert all(m[0] == SYSTEM and m[-1]["content"] == line for m, line in zip(sent, lines))
    notices = re.findall(r"\(dropped (\d+) earlier turns? to fit the 256-token context\)", out.out)
    assert notices and len(notices) < len(lines)
    assert len(sent[-1]) < 2 * len(lines)  # the window, not the whole history


def test_the_cli_chat_on_a_pipe_goes_on_past_the_context(tiny_gguf):
    from test_cli import COMMON, run

    script = "".join(f"turn {i}: tell me a story about the sea and the sky, the quick brown fox\n" for i in range(8))
    result = run("chat", tiny_gguf, *COMMON, "--max-tokens", "8", "--temperature", "0", input=script)
    assert result.exit_code == 0, result.output
    assert "error" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("⟨")]) == 8
    assert re.search(r"\(dropped \d+ earlier turns? to fit the 256-token context\)", result.output)


def test_the_cli_names_ctx_for_one_message_longer_than_the_context(tiny_gguf):
    from test_cli import COMMON, run

    result = run("chat", tiny_gguf, *COMMON, input="the lazy dog " * 200 + "\n")
    assert "shorten it or raise --ctx" in result.output
