"""`refusal-edge eval` through a remote engine with requests in flight, checked against the same eval in process and
resumed from the score store: one check shared by the llama-server and vLLM tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from refusal_edge.cli import main
from refusal_edge.evaluate.store import ScoreStore
from refusal_edge.metadata import CATEGORIES


def eval_through_engine_matches_in_process_and_resumes(engine_url: str, gguf: Path, tmp_path: Path, *, rows: int,
                                                       ctx: int, concurrency: int) -> dict:
    """Run eval of ``rows`` prompts through the engine, in process, and through the engine again; returns the
    engine run's report (the caller checks which engine it names). ``gguf`` keys the score store: eval hashes the
    file it names, and adds the engine's identity for remote scores."""
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"please tell me about topic {i}", "category": CATEGORIES[i % 5],
                                        "subcategory": "x"}) + "\n" for i in range(rows)))
    store = tmp_path / "scores.jsonl"
    base = ["eval", str(gguf), str(data), "--store", str(store), "--no-plots", "--threads", "1", "--ctx", str(ctx)]
    remote = ["--engine", engine_url, "--concurrency", str(concurrency)]

    def run(*args: str, out: str) -> dict:
        result = CliRunner().invoke(main, [*base, *args, "--out", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / out / "report.json").read_text())

    report = run(*remote, out="remote")
    assert report["scoring"]["scored"] == rows
    local = run(out="local")
    assert local["scoring"]["scored"] == rows  # the engine's scores were not taken for in-process ones
    assert_close(report["evaluation"], local["evaluation"])
    resumed = run(*remote, out="again")["scoring"]
    assert resumed["from_store"] == rows and resumed["scored"] == 0
    keys = {json.loads(line)["model"] for line in store.read_text().splitlines()}
    assert len(keys) == 2  # one store, two models: the file in process, the file on this engine
    assert ScoreStore(store, report["model"]["sha256"]).scores  # the in-process records are the file's own
    return report


def assert_close(a, b, abs_tolerance: float = 2e-3) -> None:
    """Two reports equal, floats within ``abs_tolerance``."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_close(a[key], b[key], abs_tolerance)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_close(x, y, abs_tolerance)
    elif isinstance(a, float):
        assert a == pytest.approx(b, abs=abs_tolerance)
    else:
        assert a == b
