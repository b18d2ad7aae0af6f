"""The engine seam: a pure-numpy engine drives RefusalModel end to end, and nothing above the seam reaches past it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from test_layering import import_statements

from refusal_edge.decision import Decision, FirstTokenScores, bias_vector
from refusal_edge.engine import Engine, PrefillStats, Tokenizer
from refusal_edge.engines.llama.vocab import load_tokenizer
from refusal_edge.errors import MetadataError, PromptTooLongError
from refusal_edge.evaluate.data import Example
from refusal_edge.evaluate.runner import score_examples
from refusal_edge.evaluate.store import ScoreStore
from refusal_edge.metadata import CATEGORIES, RESPOND_TOKEN, category_token
from refusal_edge.model import Chunk, RefusalModel
from refusal_edge.policy import Policy
from refusal_edge.sampling import SamplingParams

ROOT = Path(__file__).resolve().parents[1]
CONTROLS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", RESPOND_TOKEN, *map(category_token, CATEGORIES)]


class ByteTokenizer(Tokenizer):
    """Bytes are tokens 0-255; control tokens follow. No llama.cpp, no GGUF."""

    def __init__(self, controls=CONTROLS):
        self.name, self.metadata = "fake", {}
        self.controls = list(controls)
        self.n_vocab = 256 + len(self.controls)
        self._pattern = re.compile("|".join(map(re.escape, self.controls)))

    def tokenize(self, text, special):
        if not special:
            return list(text.encode("utf-8"))
        out, pos = [], 0
        for match in self._pattern.finditer(text):
            out += text[pos:match.start()].encode("utf-8")
            out.append(256 + self.controls.index(match.group()))
            pos = match.end()
        return out + list(text[pos:].encode("utf-8"))

    def piece(self, token):
        return bytes([token]) if token < 256 else b""

    def token_text(self, token):
        return "" if token < 0 else chr(token) if token < 256 else self.controls[token - 256]

    def is_control(self, token):
        return token >= 256

    def is_eog(self, token):
        return token in (256, 258)

    bos = property(lambda self: -1)
    eos = property(lambda self: 256)
    add_bos = property(lambda self: False)


class NumpyEngine(Engine):
    """A 'model' whose next-token logits are a fixed random row per last token (plus one per length mod 5)."""

    def __init__(self, tokenizer=None, n_ctx=512, seed=0):
        self.tokenizer = tokenizer or ByteTokenizer()
        self.n_ctx = n_ctx
        rng = np.random.default_rng(seed)
        n = self.tokenizer.n_vocab
        self.table = (rng.normal(size=(n, n)) * 3).astype(np.float32)
        self.by_length = rng.normal(size=(5, n)).astype(np.float32)
        self.cache: list[int] = []
        self.generate_calls: list[tuple[list[int], dict | None]] = []
        self.closed = False

    def logits(self, tokens):
        return self.table[tokens[-1]] + self.by_length[len(tokens) % 5]

    def score_fitting(self, tokens, spec, temperature):  # Engine.score checks the context first
        reused = 0
        while reused < min(len(self.cache), len(tokens) - 1) and self.cache[reused] == tokens[reused]:
            reused += 1
        self.cache = tokens
        return FirstTokenScores.from_logits(self.logits(tokens), spec, temperature), PrefillStats(len(tokens), reused, 0.0)

    def continue_from(self, tokens, params, first_token_bias):  # Engine.generate checks for room first
        seq = list(tokens)
        self.generate_calls.append((list(seq), first_token_bias))
        rng = np.random.default_rng(params.seed)
        budget = params.max_tokens + (first_token_bias is not None)
        for step in range(budget):
            if len(seq) >= self.n_ctx:
                return
            logits = self.logits(seq).astype(np.float64)
            if step == 0 and first_token_bias:
                for token, bias in first_token_bias.items():
                    logits[token] += bias
            if params.temperature == 0:
                token = int(np.argmax(logits))
            else:
                p = np.exp((logits - logits.max()) / params.temperature)
                token = int(rng.choice(len(p), p=p / p.sum()))
            seq.append(token)
            yield token

    def close(self):
        self.closed = True


@pytest.fixture()
def fake():
    return RefusalModel.from_engine(NumpyEngine())


def force(category):
    return Policy(rule="per-category", threshold=1.0, thresholds={category: 0.0})


def test_decision_on_a_fake_engine_is_the_full_vocabulary_softmax(fake):
    decision = fake.decide("hello there")
    tokens = fake.prompt_tokens("hello there")
    assert tokens[:1] == [257] and 259 not in tokens  # the template's control token; none from the text
    logits = fake.engine.logits(tokens).astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    assert decision.respond_probability == pytest.approx(p[fake.spec.respond.id], rel=1e-5)
    for ref in fake.spec.categories:
        assert decision.probabilities[ref.name] == pytest.approx(p[ref.id], rel=1e-5)
    assert decision.prompt_tokens == len(tokens)


def test_forced_token_is_the_last_prompt_token_of_the_continuation(fake):
    category = CATEGORIES[2]
    events = list(fake.stream("tell me a story", force(category), temperature=0, max_tokens=12))
    decision, chunks = events[0], events[1:]
    assert isinstance(decision, Decision) and decision.category == category and decision.forced
    assert all(isinstance(c, Chunk) for c in chunks)
    sent, bias = fake.engine.generate_calls[-1]
    assert sent == fake.prompt_tokens("tell me a story") + [decision.token_id] and bias is None
    # Independently: greedy decoding of the fake model after the forced token.
    seq, expected, finish = list(sent), b"", "length"
    for _ in range(12):
        token = int(np.argmax(fake.engine.logits(seq)))
        if token in (256, 258):
            finish = "stop"
            break
        expected += bytes([token]) if token < 256 else b""
        seq.append(token)
    assert "".join(c.text for c in chunks) == expected.decode("utf-8", errors="replace")
    assert chunks[-1].finish_reason == finish


def test_sampled_own_choice_gets_the_policy_biases_through_the_engine(fake):
    policy = Policy(rule="natural", biases={CATEGORIES[4]: 60.0, "respond": -2.0})
    result = fake.generate("hi", policy, temperature=0.8, seed=1, max_tokens=4)
    sent, bias = fake.engine.generate_calls[-1]
    assert sent == fake.prompt_tokens("hi")  # the engine chooses the first token itself
    assert bias == dict(zip(fake.spec.token_ids, bias_vector(fake.spec, policy.resolved(fake.categories))))
    assert result.decision.category == CATEGORIES[4] and not result.decision.forced and result.decision.refused
    assert result.completion_tokens <= 4


def test_budget_and_a_full_context_end_in_length():
    model = RefusalModel.from_engine(NumpyEngine(n_ctx=60, seed=3))
    prompt = model.prompt_tokens("abcdefghijklmnopqrstuvwx")
    capped = model.generate("abcdefghijklmnopqrstuvwx", force(CATEGORIES[0]), temperature=0, max_tokens=3)
    assert (capped.finish_reason, capped.completion_tokens) == ("length", 3)
    tight = model.generate("abcdefghijklmnopqrstuvwx", force(CATEGORIES[0]), temperature=0, max_tokens=50)
    assert (tight.finish_reason, tight.completion_tokens) == ("length", 60 - len(prompt) - 1)  # forced token: 1 cell
    with pytest.raises(PromptTooLongError):
        model.decide("x" * 60)


def test_evaluation_scores_and_resumes_through_any_engine(fake, tmp_path):
    examples = [Example(p, i % 2 == 0, None, None, "d.jsonl", i + 1)
                for i, p in enumerate(["hello", "hello there", "x" * 600, "the sea"])]
    with ScoreStore(tmp_path / "s.jsonl", "fake") as store:
        run = score_examples(examples, store, lambda: fake, system="be brief", skip_bad=True, progress=False)
    assert run.scored == 3 and len(run.skipped) == 1 and "d.jsonl:3" in run.skipped[0]
    assert run.reused_tokens > 0  # the shared system turn came from the fake's cache
    expected = fake.scores([{"role": "system", "content": "be brief"}, {"role": "user", "content": "the sea"}])
    with ScoreStore(tmp_path / "s.jsonl", "fake") as store:
        np.testing.assert_allclose(store.get(run.keys[-1]).logits, expected.logits)


def test_a_vocabulary_without_refusal_tokens_is_refused_and_the_engine_closed():
    engine = NumpyEngine(ByteTokenizer(CONTROLS[:3]))
    with pytest.raises(MetadataError, match="^fake: not a refusal-token model"):
        RefusalModel.from_engine(engine)
    assert engine.closed


def test_vocabulary_only_load_matches_the_full_model(tiny_gguf, tiny_model):
    tokenizer = load_tokenizer(tiny_gguf)
    try:
        text = "hello <|im_start|> [respond] world"
        for special in (False, True):
            assert tokenizer.tokenize(text, special) == tiny_model.tokenizer.tokenize(text, special)
        assert (tokenizer.n_vocab, tokenizer.bos, tokenizer.eos) == (tiny_model.tokenizer.n_vocab,
                                                                     tiny_model.tokenizer.bos, tiny_model.tokenizer.eos)
        assert [tokenizer.token_text(i) for i in tiny_model.spec.token_ids] == [
            r.token for r in (tiny_model.spec.respond, *tiny_model.spec.categories)]
    finally:
        tokenizer.close()


def test_llama_engine_applies_first_token_biases_and_restores_its_logits(tiny_model):
    target = tiny_model.spec.categories[1]
    result = tiny_model.generate("the sea", Policy(rule="natural", biases={target.name: 80.0}), temperature=0.8,
                                 seed=4, max_tokens=0)
    assert result.decision.token_id == target.id and not result.decision.forced
    engine, tokens = tiny_model.engine, tiny_model.prompt_tokens("the sea")
    engine.score(tokens, tiny_model.spec)
    before = engine.logits().copy()
    answer = engine.generate(tokens, SamplingParams(temperature=0.8, seed=4), first_token_bias={target.id: 80.0})
    assert next(answer) == target.id  # sampled from the cached prompt's logits, no second prefill
    answer.close()
    np.testing.assert_array_equal(engine.logits(), before)



def test_the_llama_engine_has_its_tokenizer_as_a_member_and_closes_it(tiny_gguf):
    """Shaped like a remote engine: the vocabulary is ``engine.tokenizer``, not the engine itself, and closing the
    engine frees the model the tokenizer reads from."""
    from refusal_edge.engines.llama.engine import LlamaEngine

    engine = LlamaEngine(tiny_gguf, n_ctx=128, n_threads=1)
    tokenizer = engine.tokenizer
    assert isinstance(tokenizer, Tokenizer) and not isinstance(engine, Tokenizer)
    assert (tokenizer.path, tokenizer.name) == (tiny_gguf, tiny_gguf.stem)
    engine.prefill(tokenizer.tokenize("the sea", special=False))
    assert engine.logits().shape == (tokenizer.n_vocab,)
    engine.close()
    assert tokenizer._llm is None and engine._llm is None
    engine.close()  # twice is harmless

# the boundary ------------------------------------------------------------------------------------------------
ABOVE_SEAM = ["refusal_edge/model.py", "refusal_edge/cli_chat.py", "refusal_edge/cli_oneshot.py", "convert/verify.py",
              *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "refusal_edge").glob("evaluate/*.py")),
              *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "refusal_edge").glob("server/*.py"))]
SEAM_API = {n for cls in (Engine, Tokenizer) for n in dir(cls) if not n.startswith("_")} | {"tokenizer", "n_ctx",
                                                                                           "n_vocab", "metadata", "name"}


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                yield (node.module or ""), alias.name


# The in-process llama.cpp engine: the one package that reaches llama.cpp, directly or through its loader (lib.py).
LLAMA_ENGINE = "refusal_edge/engines/llama"
LLAMA_LOADER = "refusal_edge.engines.llama.lib"


def _reaches_llama_cpp(path, root) -> bool:
    """Whether ``path`` (under ``root``) imports llama_cpp or the engine's loader, relative imports resolved."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names = {n for base, members in import_statements(path, package) for n in (base, *members)}
    return any(n.split(".")[0] == "llama_cpp" or n == LLAMA_LOADER or n.startswith(LLAMA_LOADER + ".") for n in names)


def llama_cpp_outside_the_engine(root) -> list[str]:
    files = [*(root / "refusal_edge").rglob("*.py"), *(root / "convert").glob("verify.py")]  # the runtime, and the
    # converter's check that runs above the seam (the rest of the workstation side may call llama.cpp's quantizer)
    inside = root / LLAMA_ENGINE
    return sorted(str(p.relative_to(root)) for p in files if inside not in p.parents and _reaches_llama_cpp(p, root))


def test_only_the_llama_engine_imports_llama_cpp():
    assert llama_cpp_outside_the_engine(ROOT) == []
    reaching = {p.stem for p in (ROOT / LLAMA_ENGINE).glob("*.py") if _reaches_llama_cpp(p, ROOT)}
    assert {"lib", "vocab", "engine", "batch", "kernels"} <= reaching, "the scan misses the engine's own imports"


@pytest.mark.parametrize("source", ["import llama_cpp\n", "from llama_cpp import Llama\n",
                                    "def f():\n    from ..engines.llama.lib import llama_cpp_module\n",
                                    "from refusal_edge.engines.llama import lib\n"])
def test_the_llama_cpp_check_catches_a_module_outside_the_engine(tmp_path, source):
    """The check above is only worth something if it can fail: any other module reaching llama.cpp is named."""
    (tmp_path / LLAMA_ENGINE).mkdir(parents=True)
    (tmp_path / LLAMA_ENGINE / "lib.py").write_text("import llama_cpp\n")  # inside: allowed
    (tmp_path / "refusal_edge/evaluate").mkdir()
    (tmp_path / "refusal_edge/evaluate/sneaky.py").write_text(source)
    assert llama_cpp_outside_the_engine(tmp_path) == ["refusal_edge/evaluate/sneaky.py"]


@pytest.mark.parametrize("path", ABOVE_SEAM)
def test_code_above_the_seam_uses_only_the_engine_interface(path):
    tree = ast.parse((ROOT / path).read_text())
    from_llama = {name for mod, name in _imports(tree) if re.search(r"(^|\.)engines\.llama(\.|$)", f"{mod}.{name}")}
    allowed = {"LlamaEngine", "load_tokenizer"} if path == "refusal_edge/model.py" else set()
    assert from_llama <= allowed, f"{path} imports {from_llama - allowed} from the llama.cpp engine"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        assert node.attr != "backend", f"{path}:{node.lineno} reaches the engine as .backend"
        owner = ast.unparse(node.value)
        if owner == "engine" or owner.endswith(".engine") or owner.endswith("tokenizer"):
            assert node.attr in SEAM_API, f"{path}:{node.lineno} uses {owner}.{node.attr}, not part of the seam"


def test_the_boundary_check_catches_a_reach_past_the_seam(tmp_path, monkeypatch):
    """The check above is only worth something if it can fail."""
    fake_root = tmp_path
    (fake_root / "refusal_edge").mkdir()
    (fake_root / "refusal_edge/model.py").write_text("def f(m):\n    return m.engine.prefill([1])\n")
    monkeypatch.setitem(globals(), "ROOT", fake_root)
    with pytest.raises(AssertionError, match="prefill"):
        test_code_above_the_seam_uses_only_the_engine_interface("refusal_edge/model.py")
    (fake_root / "refusal_edge/model.py").write_text("x = lambda m: m.backend.path\n")
    with pytest.raises(AssertionError, match="backend"):
        test_code_above_the_seam_uses_only_the_engine_interface("refusal_edge/model.py")
    (fake_root / "refusal_edge/model.py").write_text("from .engines.llama.engine import Sampler\n")
    with pytest.raises(AssertionError, match="Sampler"):
        test_code_above_the_seam_uses_only_the_engine_interface("refusal_edge/model.py")
    (fake_root / "refusal_edge/model.py").write_text("from .engines import llama\n")
    with pytest.raises(AssertionError, match="llama"):
        test_code_above_the_seam_uses_only_the_engine_interface("refusal_edge/model.py")
