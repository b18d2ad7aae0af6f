"""One `convert` run checks its output path and the free space once each, however many files it writes on the way
(with --quant: an intermediate GGUF, then the quantized one)."""

from __future__ import annotations

from collections import Counter

import pytest

from conftest import THREADS
from refusal_edge.convert import hf_to_gguf, quantize, writer
from tiny_hf import write_tiny_hf


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_hf(tmp_path_factory.mktemp("once") / "hf", n_shards=1)


@pytest.fixture
def calls(monkeypatch):
    """Every call of check_output / check_space, from whichever convert module makes it."""
    counts = Counter()
    for module in (hf_to_gguf, writer, quantize):
        for name in ("check_output", "check_space"):
            real = getattr(module, name)

            def counted(*args, _real=real, _name=name, **kwargs):
                counts[_name] += 1
                return _real(*args, **kwargs)

            monkeypatch.setattr(module, name, counted)
    return counts


@pytest.mark.parametrize("quant", [None, "q8_0"])
def test_one_run_checks_the_output_and_the_space_once(tiny, tmp_path, calls, quant):
    out = hf_to_gguf.convert_checkpoint(tiny.root, tmp_path / "m.gguf", quant=quant, threads=THREADS,
                                        progress=False).output
    assert out.read_bytes()[:4] == b"GGUF"
    assert calls == {"check_output": 1, "check_space": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"]  # the intermediate file is gone


def test_the_writers_still_check_when_called_alone(tiny, tmp_path, calls):
    """`refusal-edge quantize` (and any other caller) gets the checks from quantize_gguf itself."""
    f16 = hf_to_gguf.convert_checkpoint(tiny.root, tmp_path / "m.gguf", threads=THREADS, progress=False).output
    calls.clear()
    quantize.quantize_gguf(f16, tmp_path / "m.q8_0.gguf", "q8_0", threads=THREADS, progress=False)
    assert calls == {"check_output": 1, "check_space": 1}
