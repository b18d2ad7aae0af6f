"""Dependencies point down: computation never imports the CLI or presentation layers, the runtime never imports
the workstation side, and the wire format does not import the llama.cpp adapter. Checked on the source (imports
as written), so a lazy import inside a function counts too."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "refusal_edge"

# Every CLI module by its name (tests/test_verb_modules.py: verbs live in cli.py / cli_*.py), and the presentation.
CLI_MODULES = tuple(sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in PACKAGE.rglob("cli*.py")
                           if p.stem == "cli" or p.stem.startswith("cli_")))
PRESENTATION = ("click", "refusal_edge.options", "refusal_edge.display", "refusal_edge.evaluate.report",
                "refusal_edge.evaluate.plots", *CLI_MODULES)
ADAPTER = ("llama_cpp", "refusal_edge.engines.llama", "refusal_edge.model")  # the in-process engine, all of it
COMPUTATION = ["decision", "rules", "policy", "metadata", "sampling", "files", "arguments", "catalog", "hub",
               "gguf_annotate", "doctor",
               "engines/llama/engine", "engines/llama/vocab", "engines/llama/batch", "engines/llama/lib",
               "engines/llama/kernels", "engines/llama/kernel_canary",
               "evaluate/pipeline", "evaluate/batch", "evaluate/analysis", "evaluate/sweep", "evaluate/calibrate",
               "evaluate/guarantee", "evaluate/binomial",
               "evaluate/operating_point", "evaluate/metrics", "evaluate/store", "evaluate/runner", "evaluate/data",
               "evaluate/tasks", "evaluate/summary",
               "server/errors", "server/requests", "server/openai_wire", "server/ollama_wire", "engines/remote/engine",
               "engines/remote/firsttoken", "engines/remote/http", "engines/remote/llama_server", "engines/remote/vllm",
               "access", "aio", "window", "server/truncation", "guarded", "answer_engine"]
WIRE_FORMAT = ["engines/remote/dialect", "engines/remote/checks", "engines/remote/firsttoken", "engines/remote/http",
               "engines/remote/llama_server", "engines/remote/vllm"]


def import_statements(path: Path, package: str):
    """(module, names) per import statement of ``path``, relative imports resolved against ``package``:
    ``import a.b`` gives ("a.b", []), ``from a import b, c`` gives ("a", ["a.b", "a.c"]) (b may be a module or a
    name). Shared with test_import_cycles."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            yield base, [f"{base}.{alias.name}" for alias in node.names]


def imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, relative imports resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for base, members in import_statements(path, package):
        names.add(base)
        names.update(members)
    return names


def offending(names: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden))


def test_every_cli_module_counts_as_presentation():
    assert {"refusal_edge.cli", "refusal_edge.cli_chat", "refusal_edge.cli_doctor", "refusal_edge.server.cli",
            "refusal_edge.evaluate.cli"} <= set(CLI_MODULES)


def test_the_import_scanner_sees_relative_and_lazy_imports(tmp_path):
    module = PACKAGE / "evaluate" / "cli.py"  # imports ..options at the top and .library inside a function
    found = imports(module)
    assert "refusal_edge.options" in found and "refusal_edge.evaluate.library" in found


@pytest.mark.parametrize("module", COMPUTATION)
def test_computation_imports_no_cli_or_presentation(module):
    assert offending(imports(PACKAGE / f"{module}.py"), PRESENTATION) == []


@pytest.mark.parametrize("module", ["decision", "rules", "policy", "sampling", "server/errors", "server/requests",
                                    "server/openai_wire", "server/ollama_wire", "server/truncation", "window",
                                    "answer_engine", *WIRE_FORMAT])
def test_decision_and_wire_format_do_not_import_the_llama_cpp_adapter(module):
    assert offending(imports(PACKAGE / f"{module}.py"), ADAPTER) == []


def test_the_adapter_check_sees_the_llama_engine_through_a_relative_import():
    """The remote engine's connect takes its vocabulary from the llama engine (``from ..llama.vocab import``): the
    check above must see that as the adapter, or it would pass a wire format that did the same."""
    assert offending(imports(PACKAGE / "engines/remote/engine.py"), ADAPTER) == [
        "refusal_edge.engines.llama.vocab", "refusal_edge.engines.llama.vocab.load_tokenizer"]


# The one sanctioned way in: a remote engine's tokenizer source may be a Hugging Face checkpoint directory, whose
# tokenizer files the converter's torch-free writer turns into a vocabulary-only GGUF (lazily, only for a directory).
SANCTIONED = {"refusal_edge/engines/remote/tokenizer_source.py": ["refusal_edge.convert.vocab_only",
                                                                 "refusal_edge.convert.vocab_only.cached_vocab_gguf"]}


def test_runtime_never_imports_the_workstation_side():
    bad = {str(p.relative_to(ROOT)): offending(imports(p), ("refusal_edge.convert", "torch", "transformers"))
           for p in PACKAGE.rglob("*.py")}
    assert {k: v for k, v in bad.items() if v} == SANCTIONED


def test_the_sanctioned_converter_module_never_loads_torch():
    code = ("import sys, refusal_edge.convert.vocab_only; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


RECIPE = ("refusal_edge.convert.default_recipe",)  # the maintainers' recipe: in the repository, not in the wheel


def shipped_modules():
    """Every module of the wheel as it sits in the checkout (refusal_edge/, and convert/ as refusal_edge.convert)."""
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "convert").rglob("*.py")]:
        if "default_recipe" not in path.relative_to(ROOT).parts:
            yield path


def installed_package(path: Path) -> str:
    """The package ``path`` belongs to once installed: ``convert/`` is installed as ``refusal_edge.convert``."""
    parts = path.relative_to(ROOT).with_suffix("").parts[:-1]
    return ".".join(("refusal_edge", *parts) if parts[0] == "convert" else parts)


def recipe_imports(path: Path, package: str) -> list[str]:
    names = set()
    for base, members in import_statements(path, package):
        names.add(base)
        names.update(members)
    # An absolute `convert.default_recipe` (the repository's folder name) would be the same mistake.
    return offending(names, (*RECIPE, "convert.default_recipe"))


def test_shipped_code_never_imports_the_recipe():
    """`refusal-edge train` from the wheel once failed on `from ..default_recipe.default_data import ...` (the module is data.py now)."""
    paths = list(shipped_modules())
    assert ROOT / "convert" / "train" / "data.py" in paths and installed_package(paths[-1]).startswith("refusal_edge")
    bad = {str(p.relative_to(ROOT)): recipe_imports(p, installed_package(p)) for p in paths}
    assert {k: v for k, v in bad.items() if v} == {}


@pytest.mark.parametrize("line", ["from ..default_recipe.data import load_splits",
                                  "from refusal_edge.convert.default_recipe import data",
                                  "import convert.default_recipe.train_default"])
def test_the_recipe_check_sees_every_way_in(tmp_path, line):
    module = tmp_path / "data.py"
    module.write_text(f"def f():\n    {line}\n", encoding="utf-8")
    assert recipe_imports(module, installed_package(ROOT / "convert" / "train" / "data.py")) != []


def test_ollama_wire_format_does_not_import_the_llama_cpp_adapter():
    """It once took ``assistant_message`` from model.py, which only re-exported it from decision.py."""
    assert offending(imports(PACKAGE / "server/ollama_wire.py"), ADAPTER) == []
