"""The CPU kernel choice (engines/llama/kernels.py): facts, the canary in a child process (made to crash on purpose
here, since this must be tested without an AMX machine), the fallback and its one line, the overrides, llama-server's
flags."""

import json
import sys

import pytest
from click.testing import CliRunner

from refusal_edge import RefusalModel
from refusal_edge.cli import main
from refusal_edge.engines.llama import kernels
from refusal_edge.engines.llama.kernels import CanaryResult, HostFacts, cpu_facts, decide, llama_server_flags
from refusal_edge.errors import ModelLoadError

THREADS = 1
AMX_CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx avx2 fma f16c avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
AMX_BUILD = "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 | REPACK = 1 | "
PLAIN_BUILD = "CPU : SSE3 = 1 | AVX2 = 1 | FMA = 1 | "
SEGFAULT_AFTER_PLAIN = ("import os, signal; print('{\"plain\": \"ok\"}', flush=True); "
                        "os.kill(os.getpid(), signal.SIGSEGV)")


def facts(system_info=AMX_BUILD, cpuinfo=AMX_CPUINFO) -> HostFacts:
    model, flags = cpu_facts(cpuinfo)
    return HostFacts("0.3.36", system_info, model, flags)


def never():
    raise AssertionError("the canary ran where it was not needed")


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """A private cache directory and no choice made yet in this process (and none left behind)."""
    monkeypatch.setenv("REFUSAL_EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(kernels.REPACK_ENV, raising=False)
    kernels.forget()
    yield tmp_path
    kernels.forget()


def test_cpu_facts_read_the_model_name_and_the_amx_flags():
    model, flags = cpu_facts(AMX_CPUINFO)
    assert model.startswith("Intel(R) Xeon(R) Platinum 8481C")
    assert {"amx_int8", "amx_tile", "avx512_vnni"} <= set(flags) and "fpu" not in flags
    assert facts().amx_path and facts().extra_buffer_types == ("AMX_INT8", "REPACK")
    assert not facts(cpuinfo="model name : AMD EPYC\nflags : avx2 fma\n").amx_path
    assert not facts(system_info=PLAIN_BUILD).amx_path  # an AMX CPU, a build without AMX kernels


def test_the_cache_key_changes_with_the_build_and_the_cpu():
    assert facts().key == facts().key
    assert facts().key != facts(system_info=PLAIN_BUILD).key
    assert facts().key != facts(cpuinfo=AMX_CPUINFO.replace("8481C", "8580")).key


@pytest.mark.parametrize("mode, expected", [("on", True), ("off", False)])
def test_a_forced_mode_needs_no_canary(mode, expected):
    choice = decide(facts(), mode, never)
    assert choice.use_extra_bufts is expected and choice.reason == f"forced {mode}"


def test_a_build_without_extra_buffer_types_needs_no_canary():
    choice = decide(facts(system_info=PLAIN_BUILD), "auto", never)
    assert choice.use_extra_bufts and "no extra CPU buffer type" in choice.reason


@pytest.mark.parametrize("outcome, use_extra_bufts, words", [
    ("ok", True, "passed"),
    ("crash", False, "crashed (SIGSEGV)"),
    ("wrong", False, "gave other logits"),
    ("broken", False, "reinstall llama-cpp-python"),
])
def test_the_canary_decides_in_auto_mode(outcome, use_extra_bufts, words):
    detail = {"ok": "matched", "crash": "crashed (SIGSEGV)", "wrong": "gave other logits",
              "broken": "crashed even without them (SIGSEGV)"}[outcome]
    choice = decide(facts(), "auto", lambda: CanaryResult(outcome, detail, 0.8))
    assert choice.use_extra_bufts is use_extra_bufts and words in choice.reason
    assert choice.fell_back is (not use_extra_bufts)
    if not use_extra_bufts and outcome != "broken":
        assert "REFUSAL_EDGE_REPACK=on" in choice.reason  # the way back, named


@pytest.mark.parametrize("system_info, use_extra_bufts", [(AMX_BUILD, False), ("CPU : AVX2 = 1 | REPACK = 1 | ", True)])
def test_without_a_verdict_the_known_facts_decide(system_info, use_extra_bufts):
    choice = decide(facts(system_info=system_info), "auto", lambda: CanaryResult("inconclusive", "no child"))
    assert choice.use_extra_bufts is use_extra_bufts and "could not run" in choice.reason


def test_a_child_that_segfaults_is_a_crash_and_the_verdict_is_cached(fresh):
    host = facts()
    result = kernels.run_canary(host, [sys.executable, "-c", SEGFAULT_AFTER_PLAIN])
    assert (result.outcome, result.detail, result.cached) == ("crash", "crashed (SIGSEGV)", False)
    again = kernels.run_canary(host, [sys.executable, "-c", "raise SystemExit('must not run: cached')"])
    assert (again.outcome, again.cached) == ("crash", True)
    record = json.loads((kernels.canary_dir() / f"{host.key}.json").read_text())
    assert record["outcome"] == "crash" and record["facts"]["cpu_flags"] == list(host.cpu_flags)


def test_a_child_that_dies_before_the_extra_buffer_types_is_a_broken_build(fresh):
    code = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    assert kernels.run_canary(facts(), [sys.executable, "-c", code]).outcome == "broken"


def test_a_child_that_cannot_run_is_no_verdict_and_is_not_cached(fresh):
    host = facts()
    result = kernels.run_canary(host, [sys.executable, "-c", "import sys; sys.exit('no llama.cpp here')"])
    assert result.outcome == "inconclusive" and "no llama.cpp here" in result.detail
    assert not (kernels.canary_dir() / f"{host.key}.json").exists()
    slow = kernels.run_canary(host, [sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.5)
    assert slow.outcome == "inconclusive" and "did not finish" in slow.detail


def test_the_real_canary_passes_on_this_machine(fresh):
    host = kernels.host_facts()
    if not host.extra_buffer_types:
        pytest.skip(f"this llama.cpp build has no extra CPU buffer type: {host.system_info}")
    result = kernels.run_canary(host)
    # A build with AMX kernels on a CPU with AMX is the path that crashes (llama.cpp 0.3.36, upstream PR #26954):
    # there the canary must catch the crash and the choice must fall back; everywhere else it must pass.
    assert result.outcome in (("ok", "crash") if host.amx_path else ("ok",)), result.detail
    assert (kernels.canary_dir() / "canary-v1.gguf").is_file()  # written by the runtime itself
    if result.outcome == "crash":
        choice = kernels.decide(host, "auto", canary=lambda: result)
        assert not choice.use_extra_bufts and choice.fell_back


def crash_on_purpose(monkeypatch):
    """The next auto choice runs a canary child that segfaults after the plain decode, as on an AMX machine."""
    monkeypatch.setattr(kernels, "host_facts", lambda: facts())
    monkeypatch.setattr(kernels, "canary_command", lambda: [sys.executable, "-c", SEGFAULT_AFTER_PLAIN])


def test_a_crashing_canary_loads_without_extra_buffer_types_and_says_so_once(fresh, tiny_gguf, monkeypatch, capsys):
    crash_on_purpose(monkeypatch)
    first = RefusalModel.load(tiny_gguf, n_ctx=128, n_threads=THREADS)
    second = RefusalModel.load(tiny_gguf, n_ctx=128, n_threads=THREADS)
    try:
        assert first.engine._llm.model_params.use_extra_bufts is False
        assert second.engine._llm.model_params.use_extra_bufts is False
        assert first.decide("hello world").probabilities  # and it runs
    finally:
        first.close()
        second.close()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("refusal-edge:")]
    assert len(lines) == 1 and "crashed (SIGSEGV)" in lines[0] and "REFUSAL_EDGE_REPACK=on" in lines[0]


def test_the_python_option_and_the_environment_override_the_canary(fresh, tiny_gguf, monkeypatch):
    crash_on_purpose(monkeypatch)
    with RefusalModel.load(tiny_gguf, n_ctx=128, n_threads=THREADS, repack="on") as model:
        assert model.engine._llm.model_params.use_extra_bufts is True
    monkeypatch.setenv(kernels.REPACK_ENV, "off")
    monkeypatch.setattr(kernels, "canary_command", never)
    with RefusalModel.load(tiny_gguf, n_ctx=128, n_threads=THREADS) as model:
        assert model.engine._llm.model_params.use_extra_bufts is False


def test_an_unknown_mode_is_a_clear_error(fresh, tiny_gguf, monkeypatch):
    with pytest.raises(ModelLoadError, match="repack is 'fast': expected one of auto, on, off"):
        RefusalModel.load(tiny_gguf, n_ctx=128, n_threads=THREADS, repack="fast")
    monkeypatch.setenv(kernels.REPACK_ENV, "maybe")
    with pytest.raises(ModelLoadError, match=r"\$REFUSAL_EDGE_REPACK is 'maybe'"):
        RefusalModel.load(tiny_gguf, n_ctx=128, n_threads=THREADS)


def test_the_cli_falls_back_with_one_line_and_answers(fresh, tiny_gguf, monkeypatch):
    crash_on_purpose(monkeypatch)
    result = CliRunner().invoke(main, ["decide", str(tiny_gguf), "hello world", "--json", "--threads", "1",
                                       "--ctx", "128"])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("refusal-edge: extra CPU buffer types") == 1
    assert '"token"' in result.stdout


def test_the_cli_option_forces_the_choice_for_every_load(fresh, tiny_gguf, monkeypatch):
    monkeypatch.setattr(kernels, "canary_command", never)
    result = CliRunner().invoke(main, ["decide", str(tiny_gguf), "hello", "--threads", "1", "--ctx", "128",
                                       "--repack", "off"])
    assert result.exit_code == 0, result.output
    assert kernels.choose().use_extra_bufts is False  # what every later load in this process gets
    bad = CliRunner().invoke(main, ["decide", str(tiny_gguf), "hello", "--repack", "fast"])
    assert bad.exit_code == 2 and "'fast' is not one of" in bad.output


@pytest.mark.parametrize("flags, use_extra_bufts, no_repack", [
    (("avx2", "amx_int8"), True, True),  # a llama-server built for an AMX CPU has the AMX kernels
    (("avx2",), True, False),
    (("avx2",), False, True),  # the in-process choice fell back: so does the engine
])
def test_llama_server_flags_turn_flash_attention_off_and_repacking_off_where_needed(flags, use_extra_bufts, no_repack):
    got = llama_server_flags(flags, use_extra_bufts)
    assert got[:2] == ["--flash-attn", "off"] and ("--no-repack" in got) is no_repack
