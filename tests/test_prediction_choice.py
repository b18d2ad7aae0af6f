"""Decision-token prediction by default where it pays: timed once per model, build, CPU and thread count, cached,
and never on where it would move a decision (engines/llama/prediction.py)."""

import json

import pytest

from refusal_edge import Policy, RefusalModel
from refusal_edge.engines.llama import prediction
from refusal_edge.engines.llama.prediction import PredictionTiming, decide
from conftest import THREADS
from test_prediction import Steps, tiny_of

RESPOND = Policy(rule="binary", threshold=1.0)


def timing(prefill=40.0, step=10.0, ahead=41.0, exact=True, cached=False):
    return PredictionTiming((16, 17, 18, 19), prefill, step, ahead, exact, 8, 0.4, cached)


def test_on_where_a_hit_saves_more_than_a_miss_costs():
    choice = decide(timing(prefill=40.0, step=10.0, ahead=41.0))
    assert choice.on and choice.mode == "auto"
    assert "a hit saves 9.0 ms" in choice.reason and "a miss costs 1.0 ms" in choice.reason


def test_off_where_the_extra_row_costs_what_the_step_saves():
    choice = decide(timing(prefill=40.0, step=10.0, ahead=46.0))  # saves 4, costs 6
    assert not choice.on and "does not pay" in choice.reason


def test_off_where_the_extra_row_moves_the_scores():
    choice = decide(timing(ahead=40.5, exact=False))  # it would pay, but a decision could change
    assert not choice.on and "last bits" in choice.reason


def test_the_reason_says_whether_it_was_measured_now_or_cached():
    assert "measured now" in decide(timing()).reason
    assert "cached" in decide(timing(cached=True)).reason


@pytest.fixture(autouse=True)
def records(tmp_path, monkeypatch):
    monkeypatch.setattr(prediction, "record_dir", lambda: tmp_path / "records")
    return tmp_path / "records"


@pytest.fixture
def q8_path(tmp_path):
    return tiny_of("Q8_0", tmp_path)


@pytest.fixture
def measured(monkeypatch):
    calls = []
    real = prediction.measure

    def counted(engine, predicted, *args, **kwargs):
        calls.append(predicted)
        return real(engine, predicted, *args, **kwargs)

    monkeypatch.setattr(prediction, "measure", counted)
    return calls


def test_timed_once_on_the_first_stream_then_read_back(q8_path, measured):
    with RefusalModel.load(q8_path, n_ctx=256, n_threads=THREADS) as model:
        model.decide("hello world")
        assert measured == []  # a decision alone never predicts: nothing timed
        model.generate("hello world", RESPOND, temperature=0, max_tokens=2)
        assert measured == [model.spec.token_ids[0]]  # timed with [respond], what it predicts first
        first = model.engine.prediction_choice(model.spec.token_ids[0])
        model.generate("hello there", RESPOND, temperature=0, max_tokens=2)
        assert len(measured) == 1
    t = first.timing
    assert t.rounds >= prediction.MIN_ROUNDS and t.lengths == (16, 17, 18, 19) and not t.cached
    assert min(t.prefill_ms, t.first_step_ms, t.ahead_ms) > 0
    assert t.exact  # Q8_0 dot products: the prompt's row is the same bits with the predicted token in the batch
    with RefusalModel.load(q8_path, n_ctx=256, n_threads=THREADS) as again:
        choice = again.engine.prediction_choice(again.spec.token_ids[0])
    assert len(measured) == 1 and choice.timing.cached and choice.on == first.on
    assert choice.timing.prefill_ms == pytest.approx(t.prefill_ms)


def test_the_choice_is_what_the_engine_does(q8_path, records, monkeypatch):
    for saves in (True, False):
        for record in records.glob("prediction-*.json"):
            record.unlink()
        fake = timing(ahead=41.0 if saves else 55.0)
        monkeypatch.setattr(prediction, "measure", lambda engine, predicted: fake)
        with RefusalModel.load(q8_path, n_ctx=256, n_threads=THREADS) as model:
            steps = Steps(model.engine, monkeypatch)
            model.generate("hello world", RESPOND, temperature=0, max_tokens=1)
            prompt = len(model.prompt_tokens("hello world"))
            assert steps.calls == ([prompt + 1] if saves else [prompt, 2])


def test_a_record_per_thread_count_and_model_file(q8_path, tmp_path, measured):
    (tmp_path / "other").mkdir()
    other = tiny_of("Q8_0", tmp_path / "other")  # the same bytes elsewhere: another file, another record
    for path, threads in ((q8_path, 1), (q8_path, 2), (other, 1), (q8_path, 1)):
        with RefusalModel.load(path, n_ctx=256, n_threads=threads) as model:
            model.engine.prediction_choice(model.spec.token_ids[0])
    assert len(measured) == 3


def test_forcing_skips_the_timing(q8_path, measured):
    for forced in (True, False):
        with RefusalModel.load(q8_path, n_ctx=256, n_threads=THREADS, predict_decision=forced) as model:
            model.generate("hello world", RESPOND, temperature=0, max_tokens=2)
            choice = model.engine.prediction_choice(model.spec.token_ids[0])
            assert choice.on is forced and choice.mode == ("on" if forced else "off") and choice.timing is None
    assert measured == []


def test_a_broken_record_is_measured_again(q8_path, records, measured):
    with RefusalModel.load(q8_path, n_ctx=256, n_threads=THREADS) as model:
        model.engine.prediction_choice(model.spec.token_ids[0])
        [record] = records.glob("prediction-*.json")
        record.write_text('{"timing": {"lengths": []}}')
        model.engine._prediction = None
        model.engine.prediction_choice(model.spec.token_ids[0])
    assert len(measured) == 2 and json.loads(record.read_text())["timing"]["lengths"] == [16, 17, 18, 19]


def test_timing_leaves_answers_as_they_were(q8_path):
    """The measurement runs on the model's own context: it is left empty, and the next answer is what a model that
    never measured gives."""
    with RefusalModel.load(q8_path, n_ctx=256, n_threads=THREADS) as auto, \
            RefusalModel.load(q8_path, n_ctx=256, n_threads=THREADS, predict_decision=False) as plain:
        for prompt in ("hello world", "tell me a story about the sea"):
            a = auto.generate(prompt, temperature=0, max_tokens=12)
            b = plain.generate(prompt, temperature=0, max_tokens=12)
            assert (a.decision.token_id, a.decision.probabilities, a.text) == \
                   (b.decision.token_id, b.decision.probabilities, b.text)
