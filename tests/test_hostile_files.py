"""Damaged files get a clear error naming the file: policy files of junk, GGUFs cut short."""

import json

import pytest
from click.testing import CliRunner

from refusal_edge.cli import main
from refusal_edge.errors import GGUFFormatError, PolicyError
from refusal_edge.gguf_header import check_data, read_header
from refusal_edge.metadata import CATEGORIES
from refusal_edge.policy import Policy


@pytest.mark.parametrize("name", ["junk.toml", "junk.json"])
def test_a_policy_file_of_binary_junk_is_a_policy_error_naming_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x80\x81")
    with pytest.raises(PolicyError, match=f"policy file {path} is not UTF-8 text"):
        Policy.load(path, CATEGORIES)
    result = CliRunner().invoke(main, ["decide", "hello", "--policy", str(path), "-m", str(tmp_path / "x.gguf")])
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_a_deeply_nested_json_policy_is_a_policy_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(PolicyError, match="nested too deeply"):
        Policy.load(path)


@pytest.mark.parametrize("cut", ["one byte", "half"])
def test_inspect_fails_on_a_gguf_whose_tensor_data_is_cut_short(tiny_gguf, tmp_path, cut):
    data = tiny_gguf.read_bytes()
    short = tmp_path / "short.gguf"
    short.write_bytes(data[:-1] if cut == "one byte" else data[: len(data) // 2])
    with pytest.raises(GGUFFormatError, match="truncated"):
        check_data(read_header(short))
    result = CliRunner().invoke(main, ["inspect", str(short)])
    assert result.exit_code == 1 and "short.gguf is truncated" in result.output, result.output
    whole = CliRunner().invoke(main, ["inspect", str(tiny_gguf), "--json"])
    assert whole.exit_code == 0 and json.loads(whole.output)["problems"] == []


def test_a_zero_alignment_is_a_format_error_not_a_division_by_zero(tmp_path):
    import gguf

    path = tmp_path / "zero.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("general.alignment", 0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with pytest.raises(GGUFFormatError, match="general.alignment 0"):
        read_header(path)
