"""The names of the compressor layouts (``layout:``, computed by :mod:`icae.models.framing`), and the earlier name of
the original tool's layout.

``layout: seed`` was the original tool's layout until "seed" also meant the random seed two lines away; it is now
``layout: original``. Configs, checkpoints and GGUF exports that say ``seed`` still load, as ``original``, and the
first one read in a process says so once on stderr (a notice, not an error: nothing is computed differently).
"""

from __future__ import annotations

import sys

LAYOUT_NAMES = ("native", "original")
RENAMED = {"seed": "original"}  # earlier name -> name
_noticed: set[str] = set()


def canonical_layout(value):
    """``value`` with an earlier name replaced by today's (anything else unchanged: the caller validates it)."""
    new = RENAMED.get(value) if isinstance(value, str) else None
    if new is None:
        return value
    if value not in _noticed:
        _noticed.add(value)
        print(f"icae: note: layout: {value} is now called layout: {new} (the same computation); '{value}' is still "
              f"read, write '{new}' in new configs", file=sys.stderr)
    return new
