"""The package's import graph, read with ``ast`` (nothing is imported): no circles, and arrows only point down.

    python -m tests.test_imports        # print every circle and every arrow that points the wrong way

Layers, bottom to top: the library (config, data, metrics, models, training, serve, utils, ...) and then the recipes
(``icae.scripts``, one per entry point). A recipe imports the library and ``icae.scripts`` itself (its ``entry``),
never another recipe; nothing in ``icae.data`` imports ``icae.scripts``. Every import statement counts, also one
inside a function or an ``if __name__ == "__main__":`` block (it still ties the two modules together), but not one
under ``if TYPE_CHECKING:``, which never runs. A ``__main__`` module (``python -m icae.serve``) is a program's front
that nothing imports: it may import a recipe.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "icae"

# A second name for the same recipe (the original tool's spelling), whose whole body is ``main`` from its twin: not a
# recipe that uses another one.
ALIASES = {"icae.scripts.finetune_RepoQA": "icae.scripts.finetune_repoqa",
           "icae.scripts.inference_RepoQA": "icae.scripts.inference_repoqa"}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of the package that ``name`` (at ``path``) imports: ``from a import b`` points at ``a.b`` when that
    is a module, else at ``a``; relative imports are resolved against the module's package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # ``import icae.a.b.c`` where c is a name: the deepest module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    found = modules(root)
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
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
                    work.append((child, iter(sorted(graph.get(child, ())))))
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
    return sorted(found)


def is_recipe(name: str) -> bool:
    return name.startswith("icae.scripts.")


def wrong_arrows(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Arrows from the library up to a recipe (or to ``icae.scripts`` itself), and from one recipe to another."""
    bad = []
    for src, targets in sorted(graph.items()):
        for dst in sorted(targets):
            front = src == "icae.cli" or src.endswith(".__main__")  # programs' fronts, imported by nobody
            upward = not src.startswith("icae.scripts") and dst.startswith("icae.scripts") and not front
            sideways = is_recipe(src) and is_recipe(dst) and ALIASES.get(src) != dst
            if upward or sideways:
                bad.append((src, dst))
    return bad


# --- checks of the checker, on a package made here ---

def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / "icae" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "icae"


def test_the_checker_finds_a_circle_through_a_main_block_and_a_relative_import(tmp_path):
    root = _write(tmp_path, {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/squad.py": "X = 1\nif __name__ == '__main__':\n    from icae.scripts.fixture import main\n",
        "scripts/__init__.py": "def entry(m): pass\n",
        "scripts/fixture.py": "from ..data import squad\nfrom icae.scripts import entry\n",
        "scripts/other.py": "from icae.scripts.fixture import main\nimport icae.data.squad.X\n",
    })
    graph = import_graph(root)
    assert graph["icae.scripts.fixture"] == {"icae.data.squad", "icae.scripts"}
    assert graph["icae.scripts.other"] == {"icae.scripts.fixture", "icae.data.squad"}
    assert circles(graph) == [["icae.data.squad", "icae.scripts.fixture"]]
    assert wrong_arrows(graph) == [("icae.data.squad", "icae.scripts.fixture"),
                                   ("icae.scripts.other", "icae.scripts.fixture")]


def test_the_checker_finds_a_longer_circle_and_nothing_in_a_clean_package(tmp_path):
    root = _write(tmp_path, {"__init__.py": "", "a.py": "from icae import b\n",
                             "b.py": "import icae.c\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import icae.d\n",
                             "c.py": "def f():\n    from . import a\n", "d.py": "from icae import a\n"})
    assert circles(import_graph(root)) == [["icae.a", "icae.b", "icae.c"]]
    (root / "c.py").write_text("")
    assert circles(import_graph(root)) == []


# --- the package itself ---

# Late imports (inside a function) that still close a circle, each to go: without them the graph has no circle, and a
# new circle fails. ``python -m tests.test_imports`` names a listed arrow that is gone (then delete its line here; it
# is not a failure, so that removing a circle never breaks a commit that did not touch this file).
# ICAE.from_pretrained(dir, backend="llamacpp") is the API: the model class hands over to the engine built on
# it, so this one circle is by design (a function-level import, only when that backend is asked for).
LEFT = {("icae.models.icae", "icae.engines.llamacpp")}  # ICAE.load(backend="llamacpp") -> the engine built on ICAE


def test_the_package_has_no_import_circles_but_the_listed_late_imports():
    graph = import_graph()
    assert circles({src: dsts - {dst for s, dst in LEFT if s == src} for src, dsts in graph.items()}) == []


# Recipes that still run another recipe, each to go (then delete its line here): none left.
LEFT_ACROSS: set[tuple[str, str]] = set()


def test_nothing_in_the_library_imports_a_recipe():
    graph = import_graph()
    assert len(graph) > 100 and "icae.data.squad" in graph  # the walk saw the package
    assert [(s, d) for s, d in wrong_arrows(graph) if not is_recipe(s)] == []
    assert [(s, d) for s, d in graph.items() if s.startswith("icae.data") and any(x.startswith("icae.scripts") for x in d)] == []


def test_recipes_import_the_library_not_other_recipes_but_the_listed_ones():
    assert set(wrong_arrows(import_graph())) == LEFT_ACROSS


if __name__ == "__main__":
    g = import_graph()
    for c in circles(g):
        print("circle:", " -> ".join(c))
    for src, dst in wrong_arrows(g):
        print("arrow: ", src, "->", dst)
    for src, dst in sorted(LEFT | LEFT_ACROSS):
        if dst not in g.get(src, ()):
            print("gone (delete from the list):", src, "->", dst)
