"""Every entry point: one module per recipe, ``python -m icae.scripts.<name>`` (also ``icae <name>``).

Each recipe's ``main(argv)`` reads top to bottom. Run as a program (``entry``), a user error (bad config, data file,
checkpoint) ends with its message and exit code 2, never a traceback; programming errors keep theirs.

A recipe imports the library and this package (for ``entry``), never another recipe (tests/test_imports.py). Where a
library module is also a program of its own (the original tool's ``python -m icae.data.prepare_data_for_pretraining``
and the earlier ``python -m icae.data.*`` paths), its ``main`` lives in that library module and the recipe here is a
second name for it, so that the library never imports a recipe.
"""

from __future__ import annotations

from icae.errors import close_process_group, entry  # noqa: F401  (re-exported: every recipe's ``entry``)
