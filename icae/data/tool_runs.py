"""The command kinds of :mod:`icae.data.tool_outputs` that run code in a sandbox: ``pytest`` runs with real failures,
tracebacks of real exceptions, and ``git`` histories of real edits."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from icae.data.tool_context import FIXED_TIME, Context, Output, Tree, run
from icae.data.tool_kinds import DEFINITION, copy_tree, identifier, read
from icae.data.tool_tracebacks import snippet

# Modules whose import has side effects (a browser, a poem, a display) or cannot work here.
NO_IMPORT = ("antigravity", "this", "turtle", "idlelib", "tkinter", "lib2to3", "ensurepip", "venv", "pydoc_data",
             "msilib", "winreg", "winsound", "nturl2path", "ntpath", "crypt", "nis", "spwd", "ossaudiodev")
PYTEST_FLAGS = ([], [], ["-q"], ["--tb=short"], ["-x"], ["-v"], ["-rA"], ["--tb=long"], ["-q", "--tb=line"])


def importable(ctx: Context) -> tuple[str, Path]:
    """A module of the split to import (dotted name) and its source file."""
    for _ in range(50):
        tree = ctx.tree()
        if tree.package:
            name, path = tree.module, tree.root / tree.name / "__init__.py"
        else:
            rel = ctx.rng.choice(tree.files)
            name, path = rel[:-3], tree.root / rel
        if not name.startswith("_") and not any(name == n or name.startswith(n + ".") for n in NO_IMPORT) \
                and "._" not in name and "test" not in name and path.is_file() \
                and all(part.isidentifier() for part in name.split(".")):  # a directory that is no package, too
            return name, path
    return name, path


def _public_functions(source: str) -> list[tuple[str, list[str], str]]:
    """Undecorated top-level public functions without ``*args``: ``(name, parameter names, first doc line)``."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return []
    out = []
    for node in body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and not node.decorator_list \
                and node.args.vararg is None:
            a = node.args
            params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs] + ([a.kwarg.arg] if a.kwarg else [])
            doc = (ast.get_docstring(node) or "").strip().splitlines()
            out.append((node.name, params, doc[0] if doc else ""))
    return out


def _bound_names(source: str) -> set[str]:
    """Public names a module binds at top level by assignment or ``from ... import`` (a package's ``__init__`` often
    defines nothing itself)."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return set()
    names = set()
    for node in body:
        if isinstance(node, ast.ImportFrom):
            names |= {a.asname or a.name for a in node.names if a.name != "*"}
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return {n for n in names if not n.startswith("_")}


def _typo(name: str, ctx: Context) -> str:
    r = ctx.rng.random()
    if r < 0.3 and len(name) > 4:
        i = ctx.rng.randrange(1, len(name) - 1)
        return name[:i] + name[i + 1] + name[i] + name[i + 2:]
    return name + ctx.rng.choice(["_v2", "s", "_all", "_safe"]) if r < 0.7 else "get_" + name


def _test_file(module: str, source: str, ctx: Context) -> str:
    """A test module importing ``module``: 2-6 tests on its real names, signatures and docstrings, at least one of
    which fails (a wrong name, parameter list or docstring, a call with too many arguments)."""
    rng = ctx.rng
    funcs = _public_functions(source)
    names = sorted(set(DEFINITION.findall(source)) | _bound_names(source)) or ["__name__"]
    tests = []  # (source, fails)
    for _ in range(rng.randint(2, 6)):
        t = rng.choice(["has", "in_dir", "signature", "doc", "too_many", "raises", "param"])
        f = rng.choice(funcs) if funcs else None
        name = rng.choice(names)
        if t == "has":
            target = name if rng.random() < 0.5 else _typo(name, ctx)
            tests.append((f"def test_has_{name.lower()}():\n    assert hasattr(target, {target!r})\n", target != name))
        elif t == "in_dir":
            tests.append((f"def test_exports_{name.lower()}():\n    assert {_typo(name, ctx)!r} in dir(target)\n", True))
        elif t == "signature" and f:
            params = list(f[1])
            if params and rng.random() < 0.7:
                params[rng.randrange(len(params))] = rng.choice(["value", "data", "obj", "key", "timeout"])
            elif rng.random() < 0.5:
                params.append("strict")
            tests.append((f"def test_{f[0].lower()}_signature():\n"
                           f"    assert list(inspect.signature(target.{f[0]}).parameters) == {params!r}\n",
                           params != list(f[1])))
        elif t == "doc" and f and f[2]:
            words = f[2].split()
            words[rng.randrange(len(words))] = rng.choice(["Return", "the", "a", "value", "list", "None"])
            tests.append((f"def test_{f[0].lower()}_doc():\n"
                          f"    assert target.{f[0]}.__doc__.strip().splitlines()[0] == {' '.join(words)!r}\n",
                          " ".join(words) != f[2]))
        elif t in ("too_many", "raises") and f:
            call = f"target.{f[0]}(*range({len(f[1]) + rng.randint(1, 3)}))"
            exc = rng.choice(["ValueError", "KeyError", "TypeError"])
            body = (f"    with pytest.raises({exc}):\n        {call}\n" if t == "raises"
                    else f"    result = {call}\n    assert result\n")
            tests.append((f"def test_{f[0].lower()}_{t}():\n{body}", t == "too_many" or exc != "TypeError"))
        elif t == "param":
            chosen = sorted(set(rng.sample(names, min(len(names), rng.randint(2, 5))) + [_typo(name, ctx)]))
            tests.append((f"@pytest.mark.parametrize(\"name\", {chosen!r})\ndef test_defines(name):\n"
                          f"    assert hasattr(target, name)\n", True))
    seen, unique = set(), []
    for text, fails in tests:  # one definition per test name, as a file would have
        head = text.split("(")[0]
        if head not in seen:
            seen.add(head)
            unique.append((text, fails))
    if not any(fails for _, fails in unique):
        unique.append((f"def test_module_name():\n    assert target.__name__ == {_typo(module, ctx)!r}\n", True))
    return (f"import inspect\n\nimport pytest\n\nimport {module} as target\n\n\n"
            + "\n\n".join(text for text, _ in unique))


def pytest(ctx: Context) -> Output:
    module, path = importable(ctx)
    stem = module.split(".")[-1].strip("_")
    (ctx.sandbox / f"test_{stem}.py").write_text(_test_file(module, read(path), ctx), encoding="utf-8")
    command = ["python", "-m", "pytest", "-p", "no:cacheprovider", *ctx.rng.choice(PYTEST_FLAGS), f"test_{stem}.py"]
    return Output("pytest", command, ctx.sandbox, run(command, ctx.sandbox, ctx.env))


def traceback(ctx: Context) -> Output:
    script = ctx.rng.choice(["reproduce.py", "reproduce_bug.py", "repro.py", "main.py", "check.py"])
    (ctx.sandbox / script).write_text(snippet(ctx), encoding="utf-8")
    command = ["python", script]
    return Output("traceback", command, ctx.sandbox, run(command, ctx.sandbox, ctx.env))


# ---- git ----------------------------------------------------------------------------------------------------------

def _git_env(k: int) -> dict:
    date = f"@{FIXED_TIME + 86400 * k + 3600 * (k % 7)} +0000"
    return {"GIT_AUTHOR_NAME": "Ada Lovelace", "GIT_AUTHOR_EMAIL": "ada@example.com", "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_NAME": "Ada Lovelace", "GIT_COMMITTER_EMAIL": "ada@example.com", "GIT_COMMITTER_DATE": date}


def _edit(repo: Path, ctx: Context) -> str:
    """Make one real edit to a file of ``repo``; a commit message describing it."""
    files = sorted(p for p in repo.rglob("*.py") if ".git" not in p.parts)
    path = ctx.rng.choice(files)
    lines = read(path).splitlines()
    defs = [i for i, s in enumerate(lines) if DEFINITION.match(s) and s.rstrip().endswith(":")]
    kind = ctx.rng.choice(["comment", "rename", "constant", "delete", "append"]) if defs else "append"
    rel = path.relative_to(repo).as_posix()
    if kind == "comment":
        i = ctx.rng.choice(defs)
        name = DEFINITION.match(lines[i]).group(1)
        indent = " " * (len(lines[i]) - len(lines[i].lstrip()) + 4)
        lines.insert(i + 1, f"{indent}# NOTE: {name} is called on every request; keep it cheap.")
        message = f"Document the cost of {name}"
    elif kind == "rename":
        name = DEFINITION.match(lines[ctx.rng.choice(defs)]).group(1)
        new = name + "_impl" if not name.startswith("_") else name.lstrip("_")
        lines = [re.sub(rf"\b{re.escape(name)}\b", new, s) for s in lines]
        message = f"Rename {name} to {new} in {rel}"
    elif kind == "constant" and any(re.search(r"\b\d+\b", s) for s in lines):
        i = ctx.rng.choice([i for i, s in enumerate(lines) if re.search(r"\b\d+\b", s)])
        lines[i] = re.sub(r"\b(\d+)\b", lambda m: str(int(m.group(1)) + ctx.rng.randint(1, 9)), lines[i], count=1)
        message = f"Adjust a limit in {rel}"
    elif kind == "delete":
        i = ctx.rng.choice(defs)
        n = ctx.rng.randint(1, 6)
        del lines[i + 1:i + 1 + n]
        message = f"Simplify {DEFINITION.match(lines[i]).group(1)}"
    else:
        name = identifier(ctx, Tree(".", repo, (rel,)))
        lines += ["", "", f"def check_{name.lower()}(value, *, strict=False):",
                  f'    """Return True when ``value`` is a valid {name}."""',
                  "    if value is None:", "        return not strict", f"    return isinstance(value, (str, bytes))"]
        message = f"Add check_{name.lower()}"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return message


def git(ctx: Context) -> Output:
    tree = ctx.tree(max_files=40)
    repo = ctx.sandbox / ctx.rng.choice(["repo", "project", tree.name.split("/")[-1] + "-src"])
    if tree.package:
        copy_tree(tree.root / tree.name, repo / tree.name.split("/")[-1], ctx)
    else:
        chosen = sorted(ctx.rng.sample(tree.files, min(len(tree.files), ctx.rng.randint(2, 6))))
        copy_tree(tree.root, repo / "src", ctx, [tree.root / f for f in chosen])
    env = ctx.env

    def git_run(*args: str, k: int = 0) -> str:
        return run(["git", *args], repo, env, _git_env(k))

    git_run("init", "-q", "-b", "main")
    git_run("add", "-A")
    git_run("commit", "-q", "-m", f"Import {tree.name if tree.package else 'src'}")
    commits = ctx.rng.randint(1, 3)
    for k in range(1, commits + 1):
        messages = [_edit(repo, ctx) for _ in range(ctx.rng.randint(1, 3))]
        body = "".join(f"\n- {m}" for m in messages[1:])
        git_run("commit", "-q", "-a", "-m", messages[0] + (f"\n{body}" if body else ""), k=k)
    dirty = ctx.rng.random() < 0.6
    if dirty:
        for _ in range(ctx.rng.randint(1, 2)):
            _edit(repo, ctx)
        if ctx.rng.random() < 0.3:  # an untracked reproduction script, as agents leave behind
            package = tree.name.split("/")[-1] if tree.package else "src"
            (repo / ctx.rng.choice(["reproduce.py", "test_fix.py", "scratch.py"])).write_text(
                f"import {package}\n\nprint({package}.__file__)\n", encoding="utf-8")
    options = [["log", "--stat"], ["log", "--stat"], ["log", "--oneline"], ["diff", "HEAD~1"], ["log", "-p", "-1"],
               ["diff", "--stat", "HEAD~1"]]
    if dirty:  # a clean tree's status and diff say nothing
        options += [["diff"], ["diff"], ["diff", "--stat"], ["status"]]
    if ctx.heldout:
        options += [["show", "HEAD"], ["show", "--stat", "HEAD"]]
    command = ["git", *ctx.rng.choice(options)]
    return Output("git", command, repo, run(command, repo, env))
