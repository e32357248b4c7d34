"""``python -m icae.benchmarks.agent``: the closed-loop agent benchmark (see icae.benchmarks.agent.cli)."""

from icae.benchmarks.agent.cli import main
from icae.errors import entry

entry(main)
