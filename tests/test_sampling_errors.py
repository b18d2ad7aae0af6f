"""Sampling parameters are checked in one place (sampling.SamplingParams, against sampling.RANGES) and a bad one is
a SamplingError that keeps the field apart from the problem; the CLI names the option (--top-p), OpenAI's API the
field ('top_p'), Ollama's the option the client sent ('options.top_p'), each spelling it itself: no message is
edited on the way."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from refusal_edge import Policy
from refusal_edge.cli import main
from refusal_edge.errors import PolicyError, RefusalEdgeError, SamplingError
from refusal_edge.metadata import CATEGORIES
from refusal_edge.sampling import RANGES, Range, SamplingParams
from refusal_edge.server import ollama_wire
from refusal_edge.server.errors import ApiError
from refusal_edge.server.requests import Limits, RequestTerms, chat_request

TOKENS = frozenset(["[respond]", *(f"[{c}]" for c in CATEGORIES)])
TERMS = RequestTerms(Policy(), CATEGORIES, TOKENS, Limits(max_messages=4, max_tokens=100))
HELLO = [{"role": "user", "content": "hello"}]
COMMON = ["--threads", "1", "--ctx", "256"]


def openai_request(**body):
    return chat_request({"messages": HELLO, **body}, TERMS)


def ollama_request(**options):
    body = ollama_wire.chat_body({"messages": HELLO, "options": options}, n_ctx=256)
    return chat_request(body, TERMS, names=ollama_wire.FIELD_NAMES)


@pytest.mark.parametrize("field, value, words", [
    ("temperature", -0.1, "must be a number >= 0, got -0.1"),
    ("temperature", math.nan, "must be a number >= 0, got nan"),
    ("temperature", "hot", "got 'hot'"),
    ("top_p", 0, "must be a number in (0, 1], got 0"),
    ("min_p", 1.5, "must be a number in [0, 1]"),
    ("top_k", 2 ** 31, "must be an integer >= 0 and <= 2147483647"),
    ("top_k", 4.0, "must be an integer"),
    ("top_k", True, "must be an integer"),
    ("repeat_penalty", 0.0, "must be a number > 0"),
    ("repeat_penalty", 10 ** 400, "(401 characters)"),
    ("max_tokens", -1, "must be an integer >= 0"),
    ("seed", 1.5, "must be an integer, got 1.5"),
    ("stop", ["a", 3], "must be a string or a list of strings"),
])
def test_a_bad_value_is_a_sampling_error_naming_its_field(field, value, words):
    with pytest.raises(SamplingError) as caught:
        SamplingParams(**{field: value})
    error = caught.value
    assert isinstance(error, RefusalEdgeError) and isinstance(error, ValueError)  # the CLI's and Python's handlers
    assert error.field == field and words in error.problem
    assert str(error) == f"{field} {error.problem}" and error.naming("--x") == f"--x {error.problem}"


def test_good_values_are_kept_as_their_type():
    params = SamplingParams(temperature=0, top_k=np.int64(7), top_p=np.float32(0.5), seed=-3, stop="\n")
    assert params.temperature == 0.0 and isinstance(params.temperature, float)
    assert params.top_k == 7 and type(params.top_k) is int
    assert params.top_p == 0.5 and params.seed == -3 and params.stop == ("\n",)
    assert SamplingParams(max_tokens=0).max_tokens == 0  # the Python API's "decision only"


def test_narrower_ranges_are_checked_by_the_same_code():
    defaults = SamplingParams()
    with pytest.raises(SamplingError, match=r"^temperature must be a number in \[0, 2\], got 2\.5$"):
        SamplingParams.from_fields({"temperature": 2.5}, defaults, {"temperature": Range(0.0, 2.0)})
    assert SamplingParams.from_fields({"temperature": 2.5, "seed": None}, defaults).temperature == 2.5
    with pytest.raises(TypeError, match="not sampling fields: colour"):
        SamplingParams.from_fields({"colour": 1}, defaults)


@pytest.fixture
def cooler(monkeypatch):
    """sampling.RANGES with temperature capped at 1.5 (above every interface's default, below OpenAI's 2): every
    interface must follow it, having no range of its own."""
    monkeypatch.setitem(RANGES, "temperature", Range(0.0, 1.5))


def test_the_cli_names_the_option_of_the_field_sampling_params_refused(tiny_gguf, cooler):
    for verb in ("chat", "generate"):
        result = CliRunner().invoke(main, [verb, str(tiny_gguf), *(["hi"] if verb == "generate" else []),
                                           "--temperature", "1.7", *COMMON], input="hi\n")
        assert result.exit_code == 2, result.output
        assert "Invalid value for '--temperature': must be a number in [0, 1.5], got 1.7" in result.output
    result = CliRunner().invoke(main, ["generate", str(tiny_gguf), "hi", "--top-p", "0", *COMMON])
    assert result.exit_code == 2 and "Invalid value for '--top-p': must be a number in (0, 1], got 0.0" in result.output
    assert "Traceback" not in result.output


def test_the_server_names_the_field_as_each_api_spells_it(cooler):
    with pytest.raises(ApiError) as openai:
        openai_request(temperature=1.7)
    assert (openai.value.status, openai.value.param) == (400, "temperature")
    assert openai.value.message == "'temperature' must be a number in [0, 1.5], got 1.7"
    with pytest.raises(ApiError) as ollama:
        ollama_request(temperature=1.7)
    assert (ollama.value.status, ollama.value.param) == (400, "options.temperature")
    assert ollama.value.message == "'options.temperature' must be a number in [0, 1.5], got 1.7"


@pytest.mark.parametrize("options, param, words", [
    ({"num_predict": 0}, "options.num_predict", "'options.num_predict' must be an integer >= 1, got 0"),
    ({"num_predict": 101}, "options.num_predict", "options.num_predict 101 is over this server's limit of 100"),
    ({"top_k": "many"}, "options.top_k", "'options.top_k' must be an integer >= 0"),
    ({"stop": ["x"] * 17}, "options.stop", "'options.stop' holds 17 strings"),
    ({"seed": 0.5}, "options.seed", "'options.seed' must be an integer"),
])
def test_ollama_errors_name_the_option_the_client_sent(options, param, words):
    with pytest.raises(ApiError) as caught:
        ollama_request(**options)
    assert caught.value.param == param and words in caught.value.message, caught.value.message
    assert "max_tokens" not in caught.value.message


def test_max_completion_tokens_is_named_when_it_was_sent():
    with pytest.raises(ApiError) as caught:
        openai_request(max_completion_tokens=101)
    assert caught.value.param == "max_completion_tokens"
    assert caught.value.message.startswith("max_completion_tokens 101 is over this server's limit of 100")
    with pytest.raises(ApiError) as caught:
        openai_request(max_tokens=101)
    assert caught.value.param == "max_tokens"


def test_a_policy_error_is_not_a_sampling_error():
    # The decision's temperature is the policy's (PolicyError, 'refusal'); the answer's is sampling's.
    with pytest.raises(ApiError) as caught:
        openai_request(refusal={"temperature": 1e300})
    assert caught.value.param == "refusal"
    assert not issubclass(SamplingError, PolicyError)


def test_live_servers_answer_in_each_apis_shape(tiny_model, cooler):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from refusal_edge.server.app import ServerSettings, create_app
    from refusal_edge.server.run import BackgroundServer
    from refusal_edge.server.slots import SlotPool

    settings = ServerSettings(model_id="tiny", policy=tiny_model.default_policy)
    with BackgroundServer(create_app(SlotPool([tiny_model]), settings)) as running, \
            httpx.Client(base_url=running.url, trust_env=False, timeout=30) as http:
        headers = {"Content-Type": "application/json"}
        openai = http.post("/v1/chat/completions", headers=headers,
                           content=json.dumps({"messages": HELLO, "temperature": 1.7}))
        ollama = http.post("/api/chat", headers=headers,
                           content=json.dumps({"messages": HELLO, "stream": False, "options": {"temperature": 1.7}}))
    assert openai.status_code == 400 and openai.json()["error"]["param"] == "temperature"
    assert openai.json()["error"]["message"] == "'temperature' must be a number in [0, 1.5], got 1.7"
    assert ollama.status_code == 400
    assert ollama.json() == {"error": "'options.temperature' must be a number in [0, 1.5], got 1.7"}
