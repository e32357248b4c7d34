"""Atomic file writes: a reader (or a crash) never sees a half-written checkpoint, metrics or predictions file."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from icae.errors import UserError


# What a full disk or a file-size limit (ulimit -f) looks like from each writer: Python's OSError, safetensors' Rust
# error text, and torch.save's stream writer (which loses the errno: "unexpected pos", "iostream error").
DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
DISK_MESSAGES = ("os error 28", "os error 27", "os error 122", "no space left", "file too large", "disk quota",
                 "unexpected pos", "iostream error", "failed writing")


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or an exception it wraps) is a write that ran out of disk space or hit a file-size limit."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) and error.errno in DISK_ERRNOS:
            return True
        if isinstance(error, (OSError, RuntimeError)) or type(error).__name__ == "SafetensorError":
            if any(m in str(error).lower() for m in DISK_MESSAGES):
                return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def disk_full(path: str | Path, error: BaseException) -> UserError:
    return UserError(f"cannot write {path}: the disk is full or a file-size limit (ulimit -f) was reached "
                     f"({type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}); nothing "
                     "earlier was replaced: free some space or raise the limit, and run again")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    The file gets the permissions of any newly created file (``0666`` less the umask), not the owner-only ones of a
    temporary file, so that a checkpoint or result written here is as readable as one written directly.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e} (choose a writable directory)") from None
    os.close(fd)
    mode = 0o666 & ~_umask()
    os.chmod(tmp, mode)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)  # a writer that recreates the file (safetensors does) leaves it owner-only
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as e:
        if is_disk_full(e):
            raise disk_full(path, e) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def ensure_writable(directory: str | Path, key: str) -> Path:
    """Create ``directory`` if needed and check that files can be written there; a UserError naming ``key`` if not."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=directory, prefix=".icae-write-check.", delete=True)
        probe.close()
    except OSError as e:
        raise UserError(f"{key}: cannot write to {directory}: {e.strerror or e}; choose a writable directory") from None
    return directory


def temp_dir(parent: str | Path, prefix: str) -> Path:
    """A new directory in ``parent`` to build something in and rename into place, with the permissions of any newly
    created directory (``0777`` less the umask; ``mkdtemp`` alone would make it owner-only)."""
    path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(path, 0o777 & ~_umask())
    return path


def replaceable(path: str | Path, overwrite: bool, flag: str = "--overwrite") -> Path:
    """``path``, checked before any work is done: an existing file is refused (a UserError naming ``flag``) unless
    ``overwrite``, and then that it will be replaced (when the run ends and writes it) is said on stderr; anything
    there that is not a file (a directory) is refused either way, before the run rather than at its end."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise UserError(f"{path} exists and is not a file: move it away, or choose another directory")
    if path.exists():
        if not overwrite:
            raise UserError(f"{path} exists (an earlier run's result); pass {flag} to replace it, or choose another "
                            "directory")
        import sys

        print(f"{path} will be replaced when this run writes its result (as {flag} asked)", file=sys.stderr)
    return path
