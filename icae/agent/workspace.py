"""The temporary copy of a task's tree that an episode works on, and the one gate every path goes through.

Safety rules (each tool resolves its paths here, so none can reach outside the copy):

- a path is read relative to the copy's root; an absolute path, or one with a ``..`` component, is refused;
- the resolved path (symbolic links followed) must still lie inside the copy: a link pointing out is refused;
- a file is written only after its path passed that check, and only by :meth:`Workspace.write`.

The copy lives in a ``tempfile`` directory removed by :meth:`Workspace.close` (also on leaving a ``with`` block).
Symbolic links of the tree are copied as links, so a link pointing out stays one and is refused, never followed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from icae.agent.tasks import TaskTree


class Refused(Exception):
    """A path outside the workspace (or not a path at all); the message is the observation the agent gets."""


@dataclass(frozen=True)
class Located:
    path: Path  # resolved, inside the workspace
    shown: str  # the path as the agent should see it: relative to the workspace root, normalised


class Workspace:
    def __init__(self, tree: TaskTree):
        self._tmp = tempfile.TemporaryDirectory(prefix="icae-agent-")
        self.root = Path(self._tmp.name).resolve()
        base = self.root / tree.name
        for rel in tree.files:
            src, dst = tree.root / rel, base / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
            elif src.is_file():  # a regular file; a FIFO or device is not copied (reading one could block)
                shutil.copyfile(src, dst)
        self.original = self.snapshot()

    # --- paths ---

    def locate(self, text: str) -> Located:
        """The workspace path that ``text`` names; :class:`Refused` when it is absolute, climbs with ``..``, or
        resolves (through a link) outside the workspace."""
        if not text or "\0" in text:
            raise Refused(f"Error: {text!r} is not a path.")
        pure = PurePosixPath(text)
        if pure.is_absolute() or text.startswith("~"):
            raise Refused(f"Error: {text} is an absolute path. Paths are relative to the repository root.")
        if ".." in pure.parts:
            raise Refused(f"Error: {text} leaves the repository ('..' is not allowed).")
        path = self.root.joinpath(*pure.parts)
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError):  # a link loop
            raise Refused(f"Error: {text} cannot be resolved.") from None
        if resolved != self.root and self.root not in resolved.parents:
            raise Refused(f"Error: {text} points outside the repository; it is not accessible.")
        return Located(resolved, pure.as_posix() if pure.parts else ".")

    def shown(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def inside(self, path: Path) -> bool:
        """Whether ``path`` (a link followed) lies in the workspace."""
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError):
            return False
        return resolved == self.root or self.root in resolved.parents

    # --- files ---

    def read_bytes(self, where: Located) -> bytes:
        return where.path.read_bytes()

    def write(self, where: Located, text: str) -> None:
        if not self.inside(where.path):  # located earlier, but checked again right before the write
            raise Refused(f"Error: {where.shown} points outside the repository; it is not accessible.")
        where.path.write_text(text, encoding="utf-8")

    def snapshot(self) -> dict[str, str]:
        """Every file of the copy (links as their target text, never followed) -> its sha256: what a change shows in."""
        out = {}
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                if path.is_symlink():
                    out[self.shown(path)] = "link:" + os.readlink(path)
                elif path.is_file():
                    out[self.shown(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        return out

    def changed(self) -> list[str]:
        """Paths added, removed or modified since the copy was made, sorted."""
        now = self.snapshot()
        return sorted(p for p in set(now) | set(self.original) if now.get(p) != self.original.get(p))

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
