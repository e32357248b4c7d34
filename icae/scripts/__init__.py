"""Every entry point: one module per recipe, ``python -m icae.scripts.<name>`` (also ``icae <name>``).

Each recipe's ``main(argv)`` reads top to bottom. Run as a program (``entry``), a user error (bad config, data file,
checkpoint) ends with its message and exit code 2, never a traceback; programming errors keep theirs.
"""

from __future__ import annotations

import sys
from typing import Callable

from icae.errors import UserError


def entry(main: Callable, argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``main(argv)``; a :class:`UserError` is printed as ``prog: message`` and exits with code 2."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    prog = prog or (f"python -m {spec.name}" if spec is not None else sys.argv[0].rsplit("/", 1)[-1])
    try:
        main(argv)
    except UserError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        close_process_group()
    return 0


def close_process_group() -> None:
    """Tear down a distributed run's process group before the interpreter exits: left to exit-time destructors, the
    gloo backend's threads can abort a rank ("terminate called without an active exception") after its work is done."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
