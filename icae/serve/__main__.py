"""``python -m icae.serve``: the same as ``icae serve``."""

from icae.scripts import entry
from icae.scripts.serve import main

entry(main)
