"""`eval --ray`: the prompts a store lacks, scored as a Ray Data job on a local Ray cluster (two CPUs), land in the
same score store with the same entries as in-process scoring (byte for byte); resume sends only unscored prompts to
Ray."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from remote_eval import assert_close  # noqa: E402

from refusal_edge.cli import main  # noqa: E402
from refusal_edge.metadata import CATEGORIES  # noqa: E402

N = 12


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def write_data(path, n=N, extra=()):
    rows = [{"prompt": f"please tell me about topic {i}", "category": CATEGORIES[i % 5], "subcategory": "x"}
            for i in range(n)] + list(extra)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def records(store):
    return {r["key"]: r["scores"] for r in map(json.loads, store.read_text().splitlines()) if "key" in r}


def run_eval(*args):
    return CliRunner().invoke(main, ["eval", *map(str, args), "--no-plots", "--threads", "1", "--ctx", "256"])


def test_ray_scores_the_same_store_entries_as_in_process(cluster, tiny_gguf, tmp_path):
    data = write_data(tmp_path / "d.jsonl")
    local = run_eval(tiny_gguf, data, "--store", tmp_path / "local.jsonl", "--out", tmp_path / "local")
    assert local.exit_code == 0, local.output
    remote = run_eval(tiny_gguf, data, "--store", tmp_path / "ray.jsonl", "--ray", "--ray-workers", "2",
                      "--out", tmp_path / "ray")
    assert remote.exit_code == 0, remote.output
    a, b = records(tmp_path / "local.jsonl"), records(tmp_path / "ray.jsonl")
    assert len(a) == N and a.keys() == b.keys()
    for key in a:  # the same bytes: a prompt's scores do not depend on its worker or shard (score_aligned)
        assert json.dumps(b[key], sort_keys=True) == json.dumps(a[key], sort_keys=True)
    report = json.loads((tmp_path / "ray" / "report.json").read_text())
    assert report["scoring"]["scored"] == N and "engine" not in report["model"]  # the same model key as in-process
    local_report = json.loads((tmp_path / "local" / "report.json").read_text())
    assert_close(report["evaluation"], local_report["evaluation"])
    # the store is the in-process one: a run without Ray finds every score there
    reread = run_eval(tiny_gguf, data, "--store", tmp_path / "ray.jsonl", "--out", tmp_path / "reread")
    assert reread.exit_code == 0, reread.output
    assert json.loads((tmp_path / "reread" / "report.json").read_text())["scoring"]["from_store"] == N


def test_resume_sends_only_unscored_prompts_to_ray(cluster, tiny_gguf, tmp_path):
    store = tmp_path / "s.jsonl"
    half = run_eval(tiny_gguf, write_data(tmp_path / "half.jsonl", N // 2), "--store", store)
    assert half.exit_code == 0, half.output
    rest = run_eval(tiny_gguf, write_data(tmp_path / "all.jsonl"), "--store", store, "--ray", "--ray-workers", "2",
                    "--out", tmp_path / "out")
    assert rest.exit_code == 0, rest.output
    scoring = json.loads((tmp_path / "out" / "report.json").read_text())["scoring"]
    assert (scoring["from_store"], scoring["scored"]) == (N // 2, N - N // 2)
    assert len(records(store)) == N


def test_a_prompt_too_long_is_named_or_skipped_like_in_process(cluster, tiny_gguf, tmp_path):
    long = {"prompt": "word " * 400, "category": CATEGORIES[0], "subcategory": "x"}
    data = write_data(tmp_path / "d.jsonl", 3, [long])
    failed = run_eval(tiny_gguf, data, "--store", tmp_path / "a.jsonl", "--ray")
    assert failed.exit_code != 0 and "d.jsonl:4" in failed.output and "context holds 256" in failed.output
    assert "Traceback" not in failed.output
    skipped = run_eval(tiny_gguf, data, "--store", tmp_path / "b.jsonl", "--ray", "--skip-bad-rows",
                       "--out", tmp_path / "out")
    assert skipped.exit_code == 0, skipped.output
    scoring = json.loads((tmp_path / "out" / "report.json").read_text())["scoring"]
    assert scoring["scored"] == 3 and len(scoring["skipped"]) == 1


def test_ray_options_are_checked(tiny_gguf, tmp_path):
    data = write_data(tmp_path / "d.jsonl", 2)
    lone = run_eval(tiny_gguf, data, "--ray-workers", "2")
    assert lone.exit_code != 0 and "--ray-workers needs --ray" in lone.output
    generate = run_eval(tiny_gguf, data, "--ray", "--generate")
    assert generate.exit_code != 0 and "--generate decodes on this machine" in generate.output
