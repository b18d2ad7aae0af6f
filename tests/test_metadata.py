import json

import pytest

from refusal_edge.display import decision_line
from refusal_edge.errors import MetadataError
from refusal_edge.metadata import (
    CATEGORIES, KEY_SCHEMA_VERSION, KEY_SPEC, RefusalSpec, TokenRef, category_token, discover, short_names,
    spec_from_tokens,
)
from refusal_edge.policy import resolve_category

VOCAB = ["a", "b", "[respond]", *[category_token(c) for c in CATEGORIES], "[refuse]"]


def test_json_round_trip_keeps_everything():
    spec = discover(VOCAB).with_default_policy({"rule": "binary", "threshold": 0.3})
    fields = spec.gguf_fields()
    assert set(fields) == {"refusal.spec", "refusal.schema_version"}
    again = RefusalSpec.from_gguf_fields({k: str(v) for k, v in fields.items()})  # llama.cpp stringifies
    assert again == spec
    assert again.category_names == CATEGORIES
    assert again.token_ids == (2, 3, 4, 5, 6, 7)


def test_discovery_prefers_categories_then_falls_back_to_binary():
    assert discover(VOCAB).category_names == CATEGORIES
    binary = discover(["x", "[refuse]", "Ġ[respond]"])
    assert binary.is_binary and binary.respond == TokenRef("respond", "Ġ[respond]", 2)
    assert discover(["x", "[refuse]"]) is None
    assert discover(["[respond]", "[Humanizing requests]"]) is None


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(schema_version=99), "schema_version"),
    (lambda d: d.update(categories="nope"), "'categories' must be a list"),
    (lambda d: d["categories"][0].update(id=-1), r"categories\[0\]\.id"),
    (lambda d: d["categories"][1].update(name=d["categories"][0]["name"]), "repeats a category"),
    (lambda d: d["categories"][1].update(id=d["categories"][0]["id"]), "two decisions"),
    (lambda d: d.update(categories=[]), "no refusal category"),
])
def test_malformed_metadata_is_a_clear_error(mutate, message):
    raw = json.loads(discover(VOCAB).to_json())
    mutate(raw)
    with pytest.raises(MetadataError, match=message):
        RefusalSpec.from_json(json.dumps(raw))
    with pytest.raises(MetadataError, match="not valid JSON"):
        RefusalSpec.from_json("{")


def test_check_against_vocabulary():
    spec = discover(VOCAB)
    spec.check_against(VOCAB.__getitem__, lambda i: True, len(VOCAB))
    with pytest.raises(MetadataError, match="not a CONTROL token"):
        spec.check_against(VOCAB.__getitem__, lambda i: i != 4, len(VOCAB))
    shifted = ["pad", *VOCAB]
    with pytest.raises(MetadataError, match="vocabulary holds"):
        spec.check_against(shifted.__getitem__, lambda i: True, len(shifted))
    with pytest.raises(MetadataError, match="outside the vocabulary"):
        spec.check_against(VOCAB.__getitem__, lambda i: True, 5)
    assert RefusalSpec.from_gguf_fields({"general.name": "x"}) is None
    assert RefusalSpec.from_gguf_fields({KEY_SPEC: spec.to_json().encode()}) == spec  # raw bytes from a reader


def test_write_gguf_fields_types_each_value():
    class Writer:
        def __init__(self):
            self.calls = []

        def add_uint32(self, key, value):
            self.calls.append(("uint32", key, value))

        def add_string(self, key, value):
            self.calls.append(("string", key, value))

    spec, writer = discover(VOCAB), Writer()
    spec.write_gguf_fields(writer)
    assert sorted(writer.calls) == [("string", KEY_SPEC, spec.to_json()), ("uint32", KEY_SCHEMA_VERSION, 1)]


def test_explicit_tokens_must_be_single_entries():
    spec = spec_from_tokens(VOCAB, "[respond]", {"refuse": "[refuse]"})
    assert spec.is_binary and spec.categories[0].id == 8
    with pytest.raises(MetadataError, match="not a single entry"):
        spec_from_tokens(VOCAB, "[respond]", {"x": "[nope]"})


def test_one_short_name_per_category_unique_within_a_model():
    assert short_names(CATEGORIES) == {
        "Humanizing requests": "humanizing", "Incomplete requests": "incomplete",
        "Indeterminate requests": "indeterminate", "Requests with safety concerns": "safety",
        "Unsupported requests": "unsupported"}
    # Two names that would shorten alike keep their whole (lower-case) names, which still resolve.
    clash = ["Unsupported requests", "Unsupported modality requests", "refuse"]
    assert short_names(clash) == {"Unsupported requests": "unsupported requests",
                                  "Unsupported modality requests": "unsupported modality requests",
                                  "refuse": "refuse"}
    assert all(resolve_category(short, clash) == name for name, short in short_names(clash).items())


def test_the_cli_and_the_server_name_categories_alike(app_client, tiny_model):
    """The dials page shows the names the server sends; the CLI's decision line prints the same ones."""
    card = app_client.get("/v1/models").json()["data"][0]["refusal"]
    assert card["short_names"] == short_names(card["categories"])
    line = decision_line(tiny_model.decide([{"role": "user", "content": "hello world"}]), top=5, color=False)
    assert all(f" {card['short_names'][name]} " in line for name in card["categories"])
    assert "safety concerns" not in line
