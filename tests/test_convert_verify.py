"""The calibration-drift report (`--verify`) against transformers/torch and against an input GGUF."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import THREADS
from refusal_edge.convert.errors import ConversionError
from refusal_edge.convert.hf_to_gguf import convert_checkpoint
from refusal_edge.convert.probes import load_probes
from refusal_edge.convert.quantize import quantize_gguf
from refusal_edge.convert.verify import drift_report, format_report
from tiny_hf import reference_logits, write_tiny_hf

SCALING = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 16}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_hf(tmp_path_factory.mktemp("verify") / "hf", rope_scaling=SCALING)


def test_the_torch_reference_agrees_with_the_numpy_one(tiny):
    pytest.importorskip("transformers")
    from refusal_edge.convert.verify import TorchReference

    ref = TorchReference(tiny.root)
    ids = [1, 5, 17, 100, 200, 30, 7, tiny.n_vocab - 1]
    np.testing.assert_allclose(ref.logits(ids), reference_logits(tiny, ids)[-1], atol=1e-3)


def test_convert_verify_reports_f16_and_quantized_drift(tiny, tmp_path):
    pytest.importorskip("transformers")
    probes = tmp_path / "probes.jsonl"
    probes.write_text('{"prompt": "hello world"}\n{"messages": [{"role": "user", "content": "the sea"}]}\n')
    lines = []
    result = convert_checkpoint(tiny.root, tmp_path / "m.q8_0.gguf", quant="q8_0", verify=True,
                                probes=load_probes(probes), threads=THREADS, progress=False, log=lines.append)
    saved = json.loads((tmp_path / "m.q8_0.verify.json").read_text())
    assert saved["reference"] == "source" and saved["probes"] == 2
    assert set(saved["candidates"]) == {"f16", "q8_0"}
    f16 = saved["candidates"]["f16"]
    assert max(f16["max_abs_delta_p"].values()) < 0.01 and f16["decision_agreement"] == 1.0
    assert set(f16["mean_abs_delta_p"]) == {"respond", *result.spec.category_names}
    assert "decisions agree" in lines[-1] and "Humanizing requests" in lines[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.q8_0.gguf", "m.q8_0.verify.json", "probes.jsonl"]


def test_quantize_verify_uses_the_input_gguf(tiny, tmp_path):
    f16 = convert_checkpoint(tiny.root, tmp_path / "m.gguf", progress=False).output
    out = quantize_gguf(f16, tmp_path / "m.q4_0.gguf", "q4_0", threads=THREADS, progress=False)
    report = drift_report(out, {"q4_0": out}, [[{"role": "user", "content": "hi"}]], reference_gguf=f16,
                          threads=THREADS, log=lambda s: None)
    assert report["reference"] == "input" and 0 <= report["candidates"]["q4_0"]["decision_agreement"] <= 1
    assert "q4_0" in format_report(report)
    # The reference against itself drifts by nothing.
    same = drift_report(out, {"f16": f16}, None, reference_gguf=f16, threads=THREADS, log=lambda s: None)
    assert same["probes"] == 24 and max(same["candidates"]["f16"]["max_abs_delta_p"].values()) == 0.0


def test_probe_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("one\n\ntwo\n")
    assert load_probes(txt) == [[{"role": "user", "content": "one"}], [{"role": "user", "content": "two"}]]
    js = tmp_path / "p.json"
    js.write_text('["a", {"prompt": "b"}]')
    assert len(load_probes(js)) == 2
    for bad, match in (('[{"x": 1}]', "entry 1"), ("[]", "holds no prompts"), ("{", "not valid JSON")):
        js.write_text(bad)
        with pytest.raises(ConversionError, match=match):
            load_probes(js)
    with pytest.raises(ConversionError, match="cannot read probe file"):
        load_probes(tmp_path / "absent.txt")
