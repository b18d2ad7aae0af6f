"""No import circles in product code: each module's imports (lazy ones included, as written in the source) form a
graph without cycles, so every module can be read, tested and replaced from the bottom up."""

import ast
from pathlib import Path

from test_layering import import_statements

ROOT = Path(__file__).resolve().parent.parent
# folder -> the package it is installed as (pyproject.toml's package-dir: the repository keeps convert/ at the top)
PACKAGES = {"refusal_edge": "refusal_edge", "convert": "refusal_edge.convert"}


def module_files(root: Path) -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (root / folder).rglob("*.py"):
            parts = path.relative_to(root / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join((package, *parts))] = path
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports. ``from . import x`` where x is a module is an edge to x alone:
    importing a submodule runs its package's ``__init__`` first, which is not a dependency between the two."""
    modules = module_files(root)
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for base, members in import_statements(path, package):
            edges.update(set(members) & modules.keys() or {base})
        graph[name] = {m for m in edges if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_product_code_has_no_import_cycles():
    assert cycles(import_graph(ROOT)) == []


def test_nothing_imports_convert_as_a_top_level_package():
    """Installed, the converter is ``refusal_edge.convert``; a bare ``convert`` import would only work from a checkout
    (and load a second copy of every module there)."""
    stale = []
    for path in [*ROOT.glob("refusal_edge/**/*.py"), *ROOT.glob("convert/**/*.py"), *ROOT.glob("tests/*.py"),
                 *ROOT.glob("benchmarks/*.py"), *ROOT.glob("examples/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            stale += [f"{path.relative_to(ROOT)}: {n}" for n in names if n == "convert" or n.startswith("convert.")]
    assert stale == []


def test_the_cycle_finder_sees_a_lazy_circle(tmp_path):
    package = tmp_path / "refusal_edge"
    (package / "sub").mkdir(parents=True)
    (tmp_path / "convert").mkdir()
    (package / "__init__.py").write_text("from .a import A\n")
    (package / "a.py").write_text("from .sub import b\nA = 1\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("def f():\n    from ..a import A\n    return A\n")
    (package / "c.py").write_text("from . import a\n")  # an edge to a, not to the package
    assert cycles(import_graph(tmp_path)) == [["refusal_edge.a", "refusal_edge.sub.b"]]
