"""`refusal-edge annotate` and `refusal-edge quantize`: metadata added or kept, tensors untouched, CONTROL types."""

from __future__ import annotations

import gguf
import pytest

from conftest import THREADS
from refusal_edge.convert.annotate import annotate_gguf
from refusal_edge.convert.errors import ConversionError
from refusal_edge.convert.hf_to_gguf import convert_checkpoint
from refusal_edge.convert.quantize import quantize_gguf
from refusal_edge import RefusalModel
from refusal_edge.errors import MetadataError
from refusal_edge.metadata import KEY_SCHEMA_VERSION, KEY_SPEC
from tiny_hf import write_tiny_hf
from tiny_model import build_tiny_gguf

Q = gguf.GGMLQuantizationType


def load(path):
    return RefusalModel.load(path, n_ctx=128, n_threads=THREADS)


def kv(path, skip=()):
    r = gguf.GGUFReader(path)
    return {k: (f.types, f.contents()) for k, f in r.fields.items() if not k.startswith("GGUF.") and k not in skip}


def tensor_bytes(path):
    return {t.name: (t.tensor_type, t.shape.tolist(), bytes(t.data.tobytes())) for t in gguf.GGUFReader(path).tensors}


@pytest.fixture(scope="module")
def plain_gguf(tmp_path_factory):
    """What another converter makes: the paper's tokens as USER_DEFINED, no refusal metadata."""
    return build_tiny_gguf(tmp_path_factory.mktemp("plain") / "plain.gguf", write_metadata=False,
                           refusal_token_type=gguf.TokenType.USER_DEFINED)


@pytest.fixture(scope="module")
def f16(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conv")
    tiny = write_tiny_hf(tmp / "hf", n_embd=256, n_head=4, n_head_kv=2, n_ff=256)  # k-quant sized rows
    return convert_checkpoint(tiny.root, tmp / "m.f16.gguf", progress=False).output


def test_annotate_round_trips(plain_gguf, tmp_path):
    with pytest.raises(MetadataError, match="CONTROL"):
        load(plain_gguf)
    out = tmp_path / "annotated.gguf"
    spec = annotate_gguf(plain_gguf, out, progress=False)
    with load(out) as model:
        assert model.spec == spec
        assert all(model.tokenizer.is_control(i) for i in spec.token_ids)
    assert tensor_bytes(out) == tensor_bytes(plain_gguf)
    before = kv(plain_gguf, skip=("tokenizer.ggml.token_type",))
    after = kv(out, skip=("tokenizer.ggml.token_type", KEY_SPEC, KEY_SCHEMA_VERSION))
    assert before == after  # every other key, with its exact type
    types_before = gguf.GGUFReader(plain_gguf).fields["tokenizer.ggml.token_type"].contents()
    types_after = gguf.GGUFReader(out).fields["tokenizer.ggml.token_type"].contents()
    changed = [i for i, (a, b) in enumerate(zip(types_before, types_after)) if a != b]
    assert changed == sorted(spec.token_ids)
    # Annotating again is idempotent, byte for byte.
    again = tmp_path / "again.gguf"
    annotate_gguf(out, again, progress=False)
    assert again.read_bytes() == out.read_bytes()


def test_annotate_replaces_metadata_and_adds_a_default_policy(f16, tmp_path):
    policy = tmp_path / "p.json"
    policy.write_text('{"rule": "per-category", "thresholds": {"safety": 0.2}}')
    out = tmp_path / "policy.gguf"
    annotate_gguf(f16, out, default_policy=policy, progress=False)
    with load(out) as model:
        assert model.default_policy.thresholds == {"Requests with safety concerns": 0.2}
    assert tensor_bytes(out) == tensor_bytes(f16)


def test_annotate_with_explicit_tokens(plain_gguf, tmp_path):
    out = tmp_path / "explicit.gguf"
    spec = annotate_gguf(plain_gguf, out, categories={"safety": "[Requests with safety concerns]"},
                         respond="[respond]", progress=False)
    assert spec.category_names == ("safety",)
    with load(out) as model:
        assert model.categories == ("safety",)


def test_annotate_errors(tmp_path, plain_gguf):
    no_tokens = build_tiny_gguf(tmp_path / "none.gguf", refusal_tokens="none")
    with pytest.raises(ConversionError, match="no refusal tokens found"):
        annotate_gguf(no_tokens, tmp_path / "o.gguf", progress=False)
    with pytest.raises(ConversionError, match="not a single entry"):
        annotate_gguf(plain_gguf, tmp_path / "o.gguf", categories={"x": "[no such token]"}, progress=False)
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"NOPE" + bytes(100))
    with pytest.raises(ConversionError, match="not a GGUF"):
        annotate_gguf(not_gguf, tmp_path / "o.gguf", progress=False)
    with pytest.raises(ConversionError, match="not found"):
        annotate_gguf(tmp_path / "missing.gguf", tmp_path / "o.gguf", progress=False)
    truncated = tmp_path / "trunc.gguf"
    truncated.write_bytes(plain_gguf.read_bytes()[:-1000])
    with pytest.raises(ConversionError, match="truncated|not a readable"):
        annotate_gguf(truncated, tmp_path / "o.gguf", progress=False)
    truncated.write_bytes(plain_gguf.read_bytes()[:3000])  # inside the vocabulary
    with pytest.raises(ConversionError, match="truncated"):
        annotate_gguf(truncated, tmp_path / "o.gguf", progress=False)
    assert not (tmp_path / "o.gguf").exists()
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("qtype", ["q8_0", "q4_k_m"])
def test_quantize_keeps_the_metadata_and_control_types(f16, tmp_path, qtype):
    out = quantize_gguf(f16, tmp_path / f"m.{qtype}.gguf", qtype, threads=THREADS, progress=False)
    before, after = kv(f16), kv(out)
    for key in (KEY_SPEC, KEY_SCHEMA_VERSION, "tokenizer.ggml.token_type", "tokenizer.chat_template"):
        assert after[key] == before[key]
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(out).tensors}
    assert types["blk.0.ffn_up.weight"] in (Q.Q8_0, Q.Q4_K, Q.Q6_K)
    with load(out) as model, load(f16) as ref:
        assert model.spec == ref.spec
        a, b = model.decide("hello world"), ref.decide("hello world")
        for name in model.categories:
            assert abs(a.probabilities[name] - b.probabilities[name]) < 0.05


def test_quantize_keeps_embeddings_at_higher_precision(f16, tmp_path):
    out = quantize_gguf(f16, tmp_path / "m.gguf", "q4_0", keep_embeddings="f16", threads=THREADS, progress=False)
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(out).tensors}
    assert types["token_embd.weight"] == types["output.weight"] == Q.F16
    assert types["blk.0.ffn_up.weight"] == Q.Q4_0


def test_convert_with_quant_in_one_step(tmp_path):
    tiny = write_tiny_hf(tmp_path / "hf")
    result = convert_checkpoint(tiny.root, tmp_path / "m.q8.gguf", quant="q8_0", keep_intermediate=True,
                                threads=THREADS, progress=False)
    assert result.intermediate == tmp_path / "m.q8.f16.gguf" and result.intermediate.exists()
    with load(result.output) as model:
        assert model.spec == result.spec
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "m.q8.f16.gguf", "m.q8.gguf"]
    # Without --keep-intermediate nothing but the output is left.
    convert_checkpoint(tiny.root, tmp_path / "n.gguf", quant="q4_0", threads=THREADS, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "m.q8.f16.gguf", "m.q8.gguf", "n.gguf"]


def test_quantize_errors(f16, tmp_path):
    with pytest.raises(ConversionError, match="unknown quantization type 'q3_z'"):
        quantize_gguf(f16, tmp_path / "o.gguf", "q3_z")
    with pytest.raises(ConversionError, match="not found"):
        quantize_gguf(tmp_path / "absent.gguf", tmp_path / "o.gguf", "q8_0")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ConversionError, match="could not quantize"):
        quantize_gguf(bad, tmp_path / "o.gguf", "q8_0", threads=THREADS, progress=False)
    existing = tmp_path / "exists.gguf"
    existing.write_bytes(b"x")
    with pytest.raises(ConversionError, match="already exists; pass --force"):
        quantize_gguf(f16, existing, "q8_0")
    quantize_gguf(f16, existing, "q8_0", force=True, threads=THREADS, progress=False)
    assert existing.stat().st_size > 1000
    assert not list(tmp_path.glob(".*partial")) and not (tmp_path / "o.gguf").exists()


def test_fast_header_reader_agrees_with_gguf_reader(f16):
    from refusal_edge.gguf_header import read_header, tensor_extents

    h = read_header(f16)
    r = gguf.GGUFReader(f16)
    for key, field in r.fields.items():
        if not key.startswith("GGUF."):
            assert h.get(key) == field.contents(), key
    assert [(n, int(t)) for n, _, t in tensor_extents(h)] == [(t.name, int(t.tensor_type)) for t in r.tensors]
    assert h.data_offset == r.data_offset


def test_requantizing_needs_to_be_asked_for(f16, tmp_path):
    q8 = quantize_gguf(f16, tmp_path / "m.q8.gguf", "q8_0", threads=THREADS, progress=False)
    with pytest.raises(ConversionError, match="pass --allow-requantize"):
        quantize_gguf(q8, tmp_path / "m.q4.gguf", "q4_0", threads=THREADS, progress=False)
    assert not (tmp_path / "m.q4.gguf").exists()
    out = quantize_gguf(q8, tmp_path / "m.q4.gguf", "q4_0", threads=THREADS, progress=False, allow_requantize=True)
    with load(out) as model:
        assert model.decide("hello world").prompt_tokens > 0
