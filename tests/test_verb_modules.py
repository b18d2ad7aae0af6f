"""CLI verbs live in modules named one way: `cli.py` in a package (evaluate, convert, convert/train, server) or
`cli_<what>.py` beside the entry point refusal_edge/cli.py, and every such module holds verbs."""

from pathlib import Path

from refusal_edge.cli import VERBS

ROOT = Path(__file__).resolve().parent.parent


def is_cli_name(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return last == "cli" or last.startswith("cli_")


def cli_modules() -> set[str]:
    """Every cli.py / cli_*.py of the package, as installed (convert/ is refusal_edge.convert)."""
    found = set()
    for path in [*(ROOT / "refusal_edge").rglob("cli*.py"), *(ROOT / "convert").rglob("cli*.py")]:
        parts = path.relative_to(ROOT).with_suffix("").parts
        found.add(".".join(("refusal_edge", *parts) if parts[0] == "convert" else parts))
    return {m for m in found if is_cli_name(m)}


def test_every_verb_lives_in_a_cli_module():
    modules = {verb: target.split(":")[0] for verb, (target, _) in VERBS.items()}
    assert {v: m for v, m in modules.items() if not is_cli_name(m)} == {}


def test_every_cli_module_holds_a_verb():
    used = {target.split(":")[0] for target, _ in VERBS.values()}
    assert cli_modules() - used == {"refusal_edge.cli"}  # the entry point itself


def test_the_name_rule():
    assert is_cli_name("refusal_edge.server.cli") and is_cli_name("refusal_edge.cli_chat")
    assert not is_cli_name("refusal_edge.commands") and not is_cli_name("refusal_edge.client")
