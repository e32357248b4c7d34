"""The one exception family that means "the user asked for something that cannot be done as asked", and the one
place that turns it into a message and exit code 2.

Every entry point runs its ``main`` through :func:`entry`: a :class:`UserError` becomes its message and exit code 2,
without a traceback; any other exception is a programming error and keeps its traceback. ``entry`` lives here, in the
library, and not beside the recipes in ``icae.scripts``, so that a library module that is also a program (``python -m
icae.data.prepare_data_for_pretraining``, the original tool's command) runs its own ``main`` without importing a
recipe: arrows point from the recipes down to the library, never back up.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(ValueError):
    """A bad config, data file, checkpoint or request; the message names the problem and what to change."""


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
