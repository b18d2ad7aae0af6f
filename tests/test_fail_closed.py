"""No decision is ever computed from non-finite numbers: out-of-range policies are refused, and NaN or infinite
scores raise NonFiniteScoresError in the decision itself, for every caller (API, CLI, eval, server)."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from refusal_edge.cli import main
from refusal_edge.decision import FirstTokenScores, decide
from refusal_edge.errors import NonFiniteScoresError, PolicyError
from refusal_edge.evaluate.batch import ScoreMatrix
from refusal_edge.metadata import RefusalSpec, TokenRef
from refusal_edge.policy import Policy
from conftest import THREADS
from tiny_model import build_tiny_gguf

NAMES = ("A", "B")
SPEC = RefusalSpec(TokenRef("respond", "[respond]", 5),
                   tuple(TokenRef(n, f"[{n}]", 6 + i) for i, n in enumerate(NAMES)))
COMMON = ["--threads", "1", "--ctx", "256"]


@pytest.mark.parametrize("raw, words", [
    ({"temperature": 1e-40}, "temperature"),
    ({"temperature": 1e300}, "temperature"),
    ({"temperature": 0.001}, "temperature"),
    ({"temperature": math.nan}, "temperature"),
    ({"biases": {"A": 1e300}}, "biases.A"),
    ({"biases": {"respond": -101}}, "biases.respond"),
])
def test_policies_outside_the_documented_ranges_are_refused(raw, words):
    with pytest.raises(PolicyError, match=words):
        Policy.from_dict(raw, NAMES)


def test_the_ends_of_the_ranges_are_accepted():
    for t in (0.01, 100.0):
        policy = Policy(temperature=t, biases={"A": 100.0, "respond": -100.0})
        assert (policy.temperature, policy.biases) == (t, {"A": 100.0, "respond": -100.0})
        assert Policy.from_dict(policy.to_dict(), NAMES) == policy  # and they survive the wire format


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_logits_never_become_a_decision(bad):
    logits = np.zeros(12, np.float32)
    logits[3] = bad  # an ordinary token: it poisons the full-vocabulary softmax
    with pytest.raises(NonFiniteScoresError, match="not finite"):
        FirstTokenScores.from_logits(logits, SPEC)


@pytest.mark.parametrize("field, value", [("logits", [np.nan, 0.0, 0.0]), ("logits", [0.0, np.inf, 0.0]),
                                          ("rest_logsumexp", np.nan), ("rest_logsumexp", np.inf),
                                          ("top_rest_logit", np.nan)])
def test_scores_read_back_with_non_finite_values_fail_closed(field, value):
    raw = {"logits": [0.0, -1.0, -2.0], "rest_logsumexp": 1.0, "top_rest_id": 0, "top_rest_logit": 0.5}
    scores = FirstTokenScores.from_dict({**raw, field: value})
    binary = Policy(rule="binary", threshold=0.0)  # refuses everything finite: [respond] here would be fail-open
    with pytest.raises(NonFiniteScoresError):
        decide(scores, SPEC, binary)
    with pytest.raises(NonFiniteScoresError):
        ScoreMatrix.from_scores([scores]).probabilities(SPEC, binary)


@pytest.fixture(scope="module")
def nan_gguf(tmp_path_factory):
    return build_tiny_gguf(tmp_path_factory.mktemp("nan") / "nan.gguf", nan_logits=True)


def test_cli_refuses_a_degenerate_temperature_and_a_nan_model(tiny_gguf, nan_gguf, tmp_path):
    policy = tmp_path / "cold.toml"
    policy.write_text("rule = 'binary'\nthreshold = 0.0\ntemperature = 1e-40\n")
    result = CliRunner().invoke(main, ["decide", str(tiny_gguf), "hello", "--policy", str(policy), *COMMON])
    assert result.exit_code == 2 and "temperature" in result.output and "[respond]" not in result.output
    result = CliRunner().invoke(main, ["decide", str(nan_gguf), "hello", "--rule", "binary", "--threshold", "0",
                                       *COMMON])
    assert result.exit_code == 1 and "not finite" in result.output


def test_the_server_answers_a_bad_temperature_with_400_and_nan_logits_with_a_clear_500(tiny_gguf, nan_gguf):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from refusal_edge import RefusalModel
    from refusal_edge.server.app import ServerSettings, create_app
    from refusal_edge.server.run import BackgroundServer
    from refusal_edge.server.slots import SlotPool

    hello = [{"role": "user", "content": "hello"}]
    for path, body, status, code in [
        (tiny_gguf, {"messages": hello, "refusal": {"temperature": 1e300}}, 400, "invalid_refusal_policy"),
        (nan_gguf, {"messages": hello, "max_tokens": 4}, 500, "non_finite_scores"),
        (nan_gguf, {"messages": hello, "max_tokens": 4, "stream": True}, 500, "non_finite_scores"),
    ]:
        model = RefusalModel.load(path, n_ctx=256, n_threads=THREADS)
        app = create_app(SlotPool([model]), ServerSettings(model_id="m", policy=model.default_policy))
        with BackgroundServer(app) as running, httpx.Client(base_url=running.url, trust_env=False) as http:
            reply = http.post("/v1/chat/completions", content=json.dumps(body), headers={"Content-Type": "application/json"})
        model.close()
        assert reply.status_code == status, reply.text
        error = reply.json()["error"]  # an error object, not a stream: nothing was generated
        assert error["code"] == code and ("not finite" in error["message"] or "temperature" in error["message"])

