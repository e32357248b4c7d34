"""The command kinds of :mod:`icae.data.tool_outputs` that read a tree: listings, searches, file views, pip, JSON and
``py_compile`` errors. Each takes a :class:`Context` and returns the :class:`Output` of one command it really ran
(SWE-agent's own tools, ``open`` and the searches, are in :mod:`icae.data.tool_swe`)."""

from __future__ import annotations

import json
import os
import re
import shutil
from functools import lru_cache
from pathlib import Path

from icae.data.tool_context import (
    FIXED_TIME,
    HELDOUT_DISTRIBUTIONS,
    HELDOUT_PACKAGES,
    Context,
    Output,
    run,
    site_packages,
)

IDENTIFIER = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]{3,}\b")
DEFINITION = re.compile(r"^\s*(?:async\s+)?(?:def|class)\s+([A-Za-z_][A-Za-z0-9_]*)", re.M)
MAX_COPY_BYTES = 2_000_000


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def pick_file(ctx: Context, tree=None) -> tuple[object, str]:
    tree = tree or ctx.tree()
    return tree, ctx.rng.choice(tree.files)


def identifier(ctx: Context, tree) -> str:
    """A name defined in, or (a third of the time) any identifier of, a random file of ``tree``."""
    for _ in range(5):
        source = read(tree.root / ctx.rng.choice(tree.files))
        names = DEFINITION.findall(source) if ctx.rng.random() < 0.67 else IDENTIFIER.findall(source)
        if names:
            return ctx.rng.choice(sorted(set(names)))
    return "import"


def copy_tree(src: Path, dst: Path, ctx: Context, files: list[Path] | None = None) -> None:
    """Copy ``src`` (or only ``files`` of it) to ``dst`` without bytecode, each mtime a fixed time from the seed."""
    chosen = files if files is not None else [p for p in sorted(src.rglob("*")) if p.is_file()]
    for path in chosen:
        if "__pycache__" in path.parts or path.suffix == ".pyc" or path.stat().st_size > MAX_COPY_BYTES:
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        shutil.copymode(path, target)
    fix_mtimes(dst, ctx)


def fix_mtimes(top: Path, ctx: Context) -> None:
    """Set the mtime of every file and directory under ``top`` (and ``top``) from the seed, deepest first."""
    paths = sorted(top.rglob("*"), key=lambda p: (-len(p.parts), p.as_posix())) + [top]
    for path in paths:
        t = FIXED_TIME + ctx.rng.randrange(0, 90 * 86400)
        os.utime(path, (t, t), follow_symlinks=False)


def ls(ctx: Context) -> Output:
    tree = ctx.tree(max_files=150)
    if tree.package:
        copy_tree(tree.root / tree.name, ctx.sandbox / tree.name, ctx)
        target = tree.name
    else:  # a bundle of top-level modules: a few of them, copied into a directory as a project would hold them
        target = ctx.rng.choice(["src", "lib", "project"])
        chosen = ctx.rng.sample(tree.files, min(len(tree.files), ctx.rng.randint(8, 60)))
        copy_tree(tree.root, ctx.sandbox / target, ctx, [tree.root / f for f in sorted(chosen)])
    fix_mtimes(ctx.sandbox, ctx)
    flags = ctx.rng.choice([["-la"], ["-la"], ["-lah"], ["-l"], ["-R"], ["-lR"], ["-1"], ["-laS"]])
    command = ["ls", *flags, target]
    return Output("ls", command, ctx.sandbox, run(command, ctx.sandbox, ctx.env))


def grep(ctx: Context) -> Output:
    tree = ctx.tree()
    name = identifier(ctx, tree)
    r = ctx.rng.random()
    if tree.package:
        flags = (["-rn"] if r < 0.45 else ["-rnw"] if r < 0.6 else ["-rl"] if r < 0.75 else ["-rc"] if r < 0.82
                 else ["-rni"])
        if ctx.heldout and ctx.rng.random() < 0.3:
            flags = ["-rn", ctx.rng.choice(["-C", "-A"]), str(ctx.rng.randint(1, 3))]
        command = ["grep", *flags, "--include=*.py", name, tree.name]
    else:  # explicit module files, as an agent greps a few files at a time
        files = sorted(ctx.rng.sample(tree.files, min(len(tree.files), ctx.rng.randint(2, 12))))
        name = identifier(ctx, type(tree)(tree.name, tree.root, tuple(files), False))
        command = ["grep", "-n" if r < 0.8 else "-c", name, *files]
    return Output("grep", command, tree.root, run(command, tree.root, ctx.env))


def find(ctx: Context) -> Output:
    tree = ctx.tree()
    base = tree.name if tree.package else "."
    r = ctx.rng.random()
    if not tree.package:
        letter = ctx.rng.choice(sorted({f[0] for f in tree.files}))
        tests = ["-maxdepth", "1", "-name", f"{letter}*.py"]
    elif r < 0.4:
        tests = ["-name", "*.py"]
    elif r < 0.7:
        stem = Path(ctx.rng.choice(tree.files)).stem.strip("_")
        tests = ["-name", f"*{stem[:max(2, len(stem) // 2)]}*"]
    elif r < 0.85:
        tests = ["-type", "d"]
    else:
        tests = ["-name", "*.py", "-size", f"+{ctx.rng.choice([4, 8, 16, 32])}k"]
    command = ["find", base, *tests, "-not", "-path", "*/__pycache__*"]
    return Output("find", command, tree.root, run(command, tree.root, ctx.env))


def files(ctx: Context) -> Output:
    tree = ctx.tree()
    rel = ctx.rng.choice(tree.files)
    n_lines = len(read(tree.root / rel).splitlines())
    r = ctx.rng.random()
    if r < 0.2:
        chosen = sorted(ctx.rng.sample(tree.files, min(len(tree.files), ctx.rng.randint(1, 40))))
        command = ["wc", "-l", *chosen] if ctx.rng.random() < 0.8 else ["wc", *chosen]
    elif r < 0.45:
        command = ["head", "-n", str(ctx.rng.choice([10, 20, 40, 60, 100, 150])), rel]
    elif r < 0.6 and n_lines < 400:
        command = ["cat", rel]
    elif r < 0.7 and n_lines < 300:
        command = ["cat", "-n", rel]
    elif ctx.heldout and r < 0.8:
        command = ["tail", "-n", str(ctx.rng.choice([10, 25, 50, 100])), rel]
    else:
        a = ctx.rng.randint(1, max(1, n_lines))
        command = ["sed", "-n", f"{a},{a + ctx.rng.choice([10, 20, 40, 80, 120])}p", rel]
    return Output("files", command, tree.root, run(command, tree.root, ctx.env))


@lru_cache(maxsize=None)
def distributions(heldout: bool) -> tuple[str, ...]:
    """Installed distribution names (from ``*.dist-info/METADATA``): the held-out three, or all the others."""
    names = []
    for info in sorted(site_packages().glob("*.dist-info")):
        meta = info / "METADATA"
        if meta.is_file():
            m = re.search(r"^Name: (.+)$", read(meta), re.M)
            if m:
                names.append(m.group(1).strip())
    held = {n.lower() for n in HELDOUT_DISTRIBUTIONS}
    return tuple(sorted(n for n in names if (n.lower() in held) == heldout))


def pip(ctx: Context) -> Output:
    names = distributions(ctx.heldout)
    r = ctx.rng.random()
    if not ctx.heldout and r < 0.25:
        command = ["pip", "list"] + (["--format=freeze"] if ctx.rng.random() < 0.3 else [])
    elif r < 0.75:
        command = ["pip", "show", ctx.rng.choice(names)]
    elif r < 0.9:
        command = ["pip", "show", *sorted(ctx.rng.sample(names, min(len(names), ctx.rng.randint(2, 3))))]
    else:
        command = ["pip", "show", "-f", ctx.rng.choice(names)]
    return Output("pip", command, ctx.sandbox, run(command, ctx.sandbox, ctx.env))


SYNTAX_ERRORS = ("colon", "paren", "indent", "quote", "print", "stray")


def inject_syntax_error(lines: list[str], ctx: Context) -> list[str] | None:
    """``lines`` with one realistic mistake an agent's edit makes, or None if the file offers no place for it."""
    kind = ctx.rng.choice(SYNTAX_ERRORS)
    out = list(lines)
    if kind == "colon":
        spots = [i for i, s in enumerate(out) if re.match(r"\s*(def|if|for|while|class|elif|with)\b.*:\s*$", s)]
        if spots:
            i = ctx.rng.choice(spots)
            out[i] = out[i].rstrip()[:-1]
            return out
    if kind == "paren":
        spots = [i for i, s in enumerate(out) if s.rstrip().endswith(")") and "(" in s and not s.lstrip().startswith("#")]
        if spots:
            i = ctx.rng.choice(spots)
            out[i] = out[i].rstrip()[:-1]
            return out
    if kind == "indent":
        spots = [i for i in range(1, len(out)) if out[i - 1].rstrip().endswith(":") and out[i].startswith("    ")]
        if spots:
            i = ctx.rng.choice(spots)
            out[i] = out[i][4:] if ctx.rng.random() < 0.5 else "  " + out[i]
            return out
    if kind == "quote":
        spots = [i for i, s in enumerate(out) if re.search(r"= \"[^\"\\]*\"\s*$", s)]
        if spots:
            i = ctx.rng.choice(spots)
            out[i] = out[i].rstrip()[:-1]
            return out
    spots = [i for i, s in enumerate(out) if re.match(r"\s+return\b", s)]
    if not spots:
        return None
    i = ctx.rng.choice(spots)
    indent = out[i][: len(out[i]) - len(out[i].lstrip())]
    if kind not in ("print", "stray"):
        kind = ctx.rng.choice(["print", "stray"])
    out.insert(i, f'{indent}print "debug"' if kind == "print" else out[i] + ")")
    return out


def py_compile(ctx: Context) -> Output:
    for _ in range(10):
        tree, rel = pick_file(ctx)
        edited = inject_syntax_error(read(tree.root / rel).splitlines(), ctx)
        if edited is None:
            continue
        rel = f"src/{rel}"  # not in the working directory, where it would shadow the module py_compile imports
        target = ctx.sandbox / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("\n".join(edited) + "\n", encoding="utf-8")
        command = ["python", "-m", "py_compile", rel]
        text = run(command, ctx.sandbox, ctx.env)
        if text:
            return Output("py_compile", command, ctx.sandbox, text)
    raise RuntimeError("no file took a syntax error in 10 tries")


@lru_cache(maxsize=None)
def json_files(heldout: bool) -> tuple[Path, ...]:
    """JSON files of installed packages (train: packages other than the held-out ones; held out: theirs)."""
    site = site_packages()
    if heldout:
        return tuple(sorted(p for name in HELDOUT_PACKAGES for p in (site / name).rglob("*.json")))
    return tuple(sorted(p for p in site.rglob("*.json")
                        if p.relative_to(site).parts[0] not in HELDOUT_PACKAGES
                        and not any(p.relative_to(site).parts[0].lower().startswith(h.lower())
                                    for h in HELDOUT_DISTRIBUTIONS)
                        and p.stat().st_size < 200_000))


def api_response(ctx: Context) -> object:
    """An API-like response (issues, code search or a test report) about names and files of a tree."""
    tree = ctx.tree()
    rng = ctx.rng
    shape = rng.choice(["issues", "search", "report"])
    n = rng.randint(1, 12)
    if shape == "issues":
        items = [{"id": rng.randint(10_000, 99_999), "number": rng.randint(1, 4000),
                  "title": f"{identifier(ctx, tree)} {rng.choice(['fails on empty input', 'raises TypeError', 'is slow', 'returns None', 'ignores its timeout'])}",
                  "state": rng.choice(["open", "closed"]), "labels": rng.sample(["bug", "enhancement", "docs", "tests", "good first issue"], rng.randint(0, 2)),
                  "comments": rng.randint(0, 30), "created_at": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"}
                 for _ in range(n)]
        return {"total_count": n + rng.randint(0, 50), "incomplete_results": False, "items": items}
    if shape == "search":
        items = []
        for _ in range(n):
            rel = rng.choice(tree.files)
            lines = read(tree.root / rel).splitlines() or [""]
            i = rng.randrange(len(lines))
            items.append({"path": rel, "line": i + 1, "text": lines[i].strip(), "score": round(rng.random() * 20, 3)})
        return {"query": identifier(ctx, tree), "total": len(items), "results": items}
    tests = [{"nodeid": f"tests/test_{Path(rng.choice(tree.files)).stem.strip('_')}.py::test_{identifier(ctx, tree).lower()}",
              "outcome": rng.choice(["passed", "passed", "passed", "failed", "skipped"]),
              "duration": round(rng.random() / 10, 4)} for _ in range(n)]
    summary = {o: sum(t["outcome"] == o for t in tests) for o in ("passed", "failed", "skipped")}
    return {"created": 1_715_942_573.5, "exitcode": int(summary["failed"] > 0), "summary": {**summary, "total": n},
            "tests": tests}


def json_tool(ctx: Context) -> Output:
    real = json_files(ctx.heldout)
    r = ctx.rng.random()
    if real and r < 0.35:
        path = ctx.rng.choice(real)
        command = ["python", "-m", "json.tool", path.relative_to(site_packages()).as_posix()]
        return Output("json", command, site_packages(), run(command, site_packages(), ctx.env))
    body = json.dumps(api_response(ctx), ensure_ascii=False)
    if r > 0.9:  # a truncated or hand-edited response: json.tool's error
        body = body[: ctx.rng.randrange(1, len(body))] if ctx.rng.random() < 0.5 else body.replace('"', "'", 1)
    (ctx.sandbox / "response.json").write_text(body, encoding="utf-8")
    command = (["cat", "response.json"] if ctx.rng.random() < 0.15 else
               ["python", "-m", "json.tool", *ctx.rng.choice([[], [], ["--sort-keys"], ["--indent", "2"]]), "response.json"])
    return Output("json", command, ctx.sandbox, run(command, ctx.sandbox, ctx.env))
