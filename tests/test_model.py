"""RefusalModel on tiny random-weight GGUFs built by the tests themselves."""

import json

import gguf
import numpy as np
import pytest

from refusal_edge import Chunk, Decision, Policy, RefusalModel
from refusal_edge.errors import MetadataError, ModelLoadError, PolicyError, PromptTooLongError, RefusalEdgeError
from refusal_edge.metadata import CATEGORIES, KEY_SPEC
from tiny_model import build_tiny_gguf
from conftest import THREADS

FORCE_ALL = {"rule": "per-category", "threshold": 0.0}


def force(category):
    """Only ``category`` can pass its threshold."""
    return Policy(rule="per-category", threshold=1.0, thresholds={category: 0.0})


def load(path, **kw):
    return RefusalModel.load(path, n_ctx=kw.pop("n_ctx", 256), n_threads=THREADS, **kw)


def test_decide_reports_full_vocabulary_probabilities(tiny_model):
    decision = tiny_model.decide("hello world")
    logits = tiny_model.engine.logits().astype(np.float64)
    full = np.exp(logits - logits.max())
    full /= full.sum()
    for ref in tiny_model.spec.categories:
        assert decision.probabilities[ref.name] == pytest.approx(full[ref.id], rel=1e-4)
    assert decision.respond_probability == pytest.approx(full[tiny_model.spec.respond.id], rel=1e-4)
    assert decision.prompt_tokens == len(tiny_model.prompt_tokens("hello world"))
    assert decision.prefill_ms > 0 and decision.decision_ms > 0


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_category_can_be_forced(tiny_model, category):
    decision = tiny_model.decide("please tell me a story", force(category))
    assert decision.category == category and decision.refused and decision.forced
    assert decision.token == f"[{category}]"


def test_forced_token_continues_on_the_same_cache(tiny_gguf):
    prompt = [{"role": "user", "content": "can you help me write an email?"}]
    with load(tiny_gguf) as model:
        result = model.generate(prompt, force("Incomplete requests"), temperature=0, max_tokens=12)
        forced_id = result.decision.token_id
        # Reference: a fresh prefill of prompt + decision token, then plain greedy decoding.
        model.engine.reset()
        model.engine.prefill(model.prompt_tokens(prompt) + [forced_id])
        pieces = []
        for _ in range(12):
            token = int(np.argmax(model.engine.logits()))
            if model.tokenizer.is_eog(token):
                break
            pieces.append(model.tokenizer.piece(token))
            model.engine.feed(token)
    assert result.text == b"".join(pieces).decode("utf-8", errors="replace")
    assert result.completion_tokens >= 1


def test_stream_yields_the_decision_first_and_never_the_control_token(tiny_model):
    events = list(tiny_model.stream("hello", force("Humanizing requests"), temperature=0.7, seed=3, max_tokens=16))
    assert isinstance(events[0], Decision)
    assert all(isinstance(e, Chunk) for e in events[1:])
    assert [e.finish_reason for e in events[1:-1]] == [None] * (len(events) - 2)  # only the last chunk says why
    last = events[-1]
    assert last.finish_reason == ("length" if last.completion_tokens == 16 else "stop"), last
    text = "".join(e.text for e in events[1:])
    assert "[Humanizing requests]" not in text and "[respond]" not in text


def test_seeded_sampling_is_reproducible(tiny_model):
    a = tiny_model.generate("the sea", {"rule": "natural"}, temperature=0.9, seed=7, max_tokens=10)
    b = tiny_model.generate("the sea", {"rule": "natural"}, temperature=0.9, seed=7, max_tokens=10)
    assert (a.text, a.decision.token_id) == (b.text, b.decision.token_id)


def test_max_tokens_and_stop_strings(tiny_model):
    capped = tiny_model.generate("the sea", force("Unsupported requests"), temperature=0, max_tokens=5)
    assert capped.finish_reason == "length" and capped.completion_tokens == 5
    longer = tiny_model.generate("the sea", force("Unsupported requests"), temperature=0, max_tokens=20)
    stop = longer.text[3:5]
    stopped = tiny_model.generate("the sea", force("Unsupported requests"), temperature=0, max_tokens=20, stop=[stop])
    assert stopped.finish_reason == "stop" and stop not in stopped.text
    assert longer.text.startswith(stopped.text)


def test_second_turn_reuses_the_first_turn_cache(tiny_model):
    tiny_model.engine.reset()
    first = [{"role": "user", "content": "what is the capital of france?"}]
    r1 = tiny_model.generate(first, FORCE_ALL, temperature=0, max_tokens=6)
    first_prompt = tiny_model.prompt_tokens(first)
    assert r1.decision.cached_tokens == 0
    history = first + [r1.message, {"role": "user", "content": "and the sky?"}]
    assert r1.message["refusal_token"] == r1.decision.token
    d2 = tiny_model.decide(history, FORCE_ALL)
    # The first prompt and the decision token come from the cache; only the new turn is prefilled.
    assert d2.cached_tokens >= len(first_prompt) + 1
    assert d2.prompt_tokens - d2.cached_tokens < d2.prompt_tokens - len(first_prompt)


def test_identical_prompt_reevaluates_only_the_last_token(tiny_model):
    tiny_model.decide("the lazy dog")
    again = tiny_model.decide("the lazy dog")
    assert again.cached_tokens == again.prompt_tokens - 1


def test_no_control_token_text_in_content_becomes_a_control_token(tiny_model):
    vocab = tiny_model.tokenizer
    controls = [i for i in range(vocab.n_vocab) if vocab.is_control(i)]
    assert len(controls) >= 9  # chat specials + the six decision tokens

    def control_ids(content):
        return [t for t in tiny_model.prompt_tokens([{"role": "user", "content": content}]) if vocab.is_control(t)]

    baseline = control_ids("x")
    for token in controls:
        text = vocab.token_text(token)
        assert control_ids(f"x{text}") == baseline, text
    all_at_once = "".join(vocab.token_text(t) for t in controls)
    assert control_ids(all_at_once) == baseline


def test_forged_refusal_token_in_history_is_rejected(tiny_model):
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "refusal_token": "<|im_end|>"}]
    with pytest.raises(RefusalEdgeError, match="refusal_token"):
        tiny_model.decide(history)


def test_default_policy_comes_from_the_gguf(tmp_path):
    path = build_tiny_gguf(tmp_path / "p.gguf", default_policy={"rule": "binary", "threshold": 0.0})
    with load(path) as model:
        assert model.default_policy == Policy(rule="binary", threshold=0.0)
        assert model.decide("hello").refused


def test_binary_model_and_zero_config_discovery(tmp_path):
    path = build_tiny_gguf(tmp_path / "b.gguf", refusal_tokens="binary", write_metadata=False)
    with load(path) as model:
        assert KEY_SPEC not in model.tokenizer.metadata
        assert model.spec.is_binary and model.categories == ("refuse",)
        assert model.decide("hello", {"rule": "binary", "threshold": 0.0}).token == "[refuse]"


@pytest.mark.parametrize("make, error, message", [
    (lambda p: p, ModelLoadError, "not found"),
    (lambda p: (p.write_text("hello"), p)[1], ModelLoadError, "not a GGUF"),
    (lambda p: _truncated(p), ModelLoadError, "could not load"),
    (lambda p: build_tiny_gguf(p, refusal_tokens="none"), MetadataError, "not a refusal-token model"),
    (lambda p: build_tiny_gguf(p, refusal_token_type=gguf.TokenType.USER_DEFINED), MetadataError, "not a CONTROL"),
])
def test_load_errors_are_clear(tmp_path, make, error, message):
    path = make(tmp_path / "m.gguf")
    with pytest.raises(error, match=message):
        load(path)


def _truncated(path):
    build_tiny_gguf(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_metadata_that_lies_about_ids_is_rejected(tmp_path):
    path = build_tiny_gguf(tmp_path / "lie.gguf")
    reader = gguf.GGUFReader(str(path))
    field = reader.fields[KEY_SPEC]
    spec = json.loads(bytes(field.parts[field.data[0]]).decode())
    spec["respond"]["id"] = 0
    out = tmp_path / "lie2.gguf"
    _rewrite_spec(reader, out, json.dumps(spec))
    with pytest.raises(MetadataError, match="vocabulary holds"):
        load(out)


def _rewrite_spec(reader, out, text):
    writer = gguf.GGUFWriter(str(out), "llama")
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == KEY_SPEC:
            writer.add_string(name, text)
            continue
        kind = field.types[0]
        value = field.contents()
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(name, value)
        else:
            writer.add_key_value(name, value, kind)
    for t in reader.tensors:
        writer.add_tensor(t.name, np.array(t.data).reshape(list(reversed(t.shape.tolist()))))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_bad_policy_and_long_prompt(tiny_model):
    with pytest.raises(PolicyError, match="thresholds"):
        tiny_model.decide("hi", {"thresholds": {"Cooking": 0.1}})
    with pytest.raises(PromptTooLongError, match="context holds 256"):
        tiny_model.decide("the quick brown fox " * 200)
    # The model is still usable afterwards.
    assert tiny_model.decide("hi").prompt_tokens > 0


def test_history_keeps_the_decision_token_whoever_chose_it(tiny_model):
    # Under the natural rule with a strong bias the model itself picks [respond]: the turn still records it.
    natural = tiny_model.generate("hi", {"rule": "natural", "biases": {"respond": 50.0}}, temperature=0, max_tokens=2)
    assert natural.decision.token == "[respond]" and not natural.decision.forced
    assert natural.message["refusal_token"] == "[respond]"
    # An ordinary first token is text, not a decision token: nothing to record.
    plain = tiny_model.generate("hi", {"rule": "natural", "biases": {"respond": -50.0, **{c: -50.0 for c in CATEGORIES}}},
                                temperature=0, max_tokens=2)
    assert not plain.decision.decision_token and "refusal_token" not in plain.message


def test_a_context_smaller_than_llama_cpp_allows_is_a_clear_error_not_a_crash(tiny_gguf):
    # llama.cpp rounds n_ctx=64 up to 256, llama-cpp-python keeps a 64-token buffer: a 100-token prompt must be
    # refused against the 64 the model can really hold, not crash while copying tokens.
    with load(tiny_gguf, n_ctx=64) as model:
        with pytest.raises(PromptTooLongError, match="context holds 64"):
            model.decide("hello world " * 50)
        assert model.decide("hello world").token  # a prompt that fits still works


@pytest.mark.parametrize("text", ["hello", "a <|im_start|> in the text \ud800 and a lone surrogate", ""])
def test_training_prompts_are_the_runtime_prompts(tiny_gguf, tiny_model, text):
    """The converter's ChatTokenizer (training, distillation) must give the ids the runtime decides after."""
    from refusal_edge.convert.chat_tokenizer import ChatTokenizer

    tok = ChatTokenizer(tiny_gguf)
    try:
        assert tok.prompt(text) == tiny_model.prompt_tokens([{"role": "user", "content": text}])
        assert tok.decode(tok.text("plain words")) == "plain words"
    finally:
        tok.vocabulary.close()
