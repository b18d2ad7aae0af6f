"""Hostile GGUF headers (issue 35, rows 5 and 9): lengths and counts are checked against the file's size before
anything is read or allocated, so a header that claims 2**63 bytes or 2**40 tensors in a sparse 4 GiB file costs
O(header) memory and one line of error; metadata of the wrong type (a vocabulary that is a number, a file type that
is an array, a refusal spec nested 10**5 deep) is one line from `inspect`, never a traceback."""

from __future__ import annotations

import struct
import time
import tracemalloc

import pytest
from click.testing import CliRunner

from refusal_edge.cli import main
from refusal_edge.errors import GGUFFormatError
from refusal_edge.gguf_header import (T_ARRAY, T_INT32, T_STRING, T_UINT32, T_UINT64, encode_key, encode_value,
                                      read_header)

SPARSE = 4 << 30  # the red team's sparse 4 GiB file: no disk used, every claim below fits "inside" it
ARCH = encode_key("general.architecture") + encode_value("llama", T_STRING)


def gguf(path, n_tensors: int, entries: list[bytes], size: int | None = None, pad: int = 64):
    """A GGUF header (version 3) with raw key/value ``entries``, padded with ``pad`` zero bytes, or made sparse up
    to ``size`` bytes."""
    body = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(entries)) + b"".join(entries)
    path.write_bytes(body + bytes(pad))
    if size:
        with open(path, "r+b") as fh:
            fh.truncate(size)
    return path


HOSTILE = {  # name -> (n_tensors, entries)
    "a string of 2**63 bytes": (0, [encode_key("general.name") + struct.pack("<IQ", T_STRING, 1 << 63)]),
    "a string of 3 GiB": (0, [encode_key("general.name") + struct.pack("<IQ", T_STRING, 3 << 30)]),
    "2**40 tensors": (1 << 40, [ARCH]),
    "2**60 keys": (0, []),
    "a key of 2**62 bytes": (0, [struct.pack("<Q", 1 << 62)]),
    "an array of 2**61 u64": (0, [encode_key("x") + struct.pack("<IIQ", T_ARRAY, T_UINT64, 1 << 61)]),
    "an array of 2**40 strings": (0, [encode_key("x") + struct.pack("<IIQ", T_ARRAY, T_STRING, 1 << 40)]),
    "arrays nested 10**5 deep": (0, [encode_key("x") + struct.pack("<I", T_ARRAY)
                                     + struct.pack("<IQ", T_ARRAY, 1) * 100_000]),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_header_costs_its_own_size_and_one_line(tmp_path, name):
    n_tensors, entries = HOSTILE[name]
    path = gguf(tmp_path / "hostile.gguf", n_tensors, entries, size=SPARSE)
    if name == "2**60 keys":
        with open(path, "r+b") as fh:
            fh.seek(16)
            fh.write(struct.pack("<Q", 1 << 60))
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(GGUFFormatError, match="truncated or malformed|nested too deeply"):
            read_header(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2 ** 20:.0f} MiB for {name}"  # was: the whole 4 GiB file, then MemoryError
    assert time.monotonic() - started < 5
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and str(path) in result.output, result.output


@pytest.mark.parametrize("entry, words", [
    (encode_key("tokenizer.ggml.tokens") + encode_value(5, T_UINT32), "tokenizer.ggml.tokens is int 5, not a list"),
    (encode_key("general.file_type") + encode_value([1, 2], T_ARRAY, T_INT32), "general.file_type is list"),
    (encode_key("general.name") + encode_value(7, T_UINT32), "general.name is int 7, not str"),
    (encode_key("tokenizer.ggml.tokens") + encode_value([1, 2], T_ARRAY, T_INT32), "not a list of str"),
])
def test_metadata_of_the_wrong_type_is_one_line(tmp_path, entry, words):
    path = gguf(tmp_path / "typed.gguf", 0, [ARCH, entry])
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert words in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_a_refusal_spec_nested_deeply_is_a_problem_not_a_traceback(tmp_path):
    spec = encode_key("refusal.spec") + encode_value("[" * 100_000 + "]" * 100_000, T_STRING)
    path = gguf(tmp_path / "deep.gguf", 0, [ARCH, spec])
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "refusal.spec is nested too deeply" in result.output


def test_any_type_for_the_keys_inspect_reads_is_a_report_or_one_line(tmp_path):
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import given, settings, strategies as st

    from test_properties import FAST

    keys = ["general.architecture", "general.name", "general.file_type", "llama.context_length",
            "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "refusal.spec", "general.alignment"]
    values = st.one_of(
        st.integers(0, 2 ** 32 - 1).map(lambda v: encode_value(v, T_UINT32)),
        st.text(max_size=20).map(lambda v: encode_value(v, T_STRING)),
        st.lists(st.integers(-2 ** 31, 2 ** 31 - 1), max_size=5).map(lambda v: encode_value(v, T_ARRAY, T_INT32)),
        st.sampled_from([encode_value('{"schema_version": 1}', T_STRING), encode_value("[" * 5000, T_STRING)]))

    @settings(FAST, max_examples=60)
    @given(st.dictionaries(st.sampled_from(keys), values, max_size=4))
    def check(entries):
        path = gguf(tmp_path / "any.gguf", 0, [encode_key(k) + v for k, v in entries.items()])
        result = CliRunner().invoke(main, ["inspect", str(path)])
        assert result.exit_code in (0, 1) and "Traceback" not in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)

    check()
