"""The closed-loop agent benchmark (#24): agents on held-out tasks of the agent environment, their success, steps,
decoder positions, KV cache and the steps that fit in a window.

    icae bench-agent --spec icae/configs/bench_agent/quick.yaml     (python -m icae.benchmarks.agent)
"""

from __future__ import annotations

from icae.benchmarks.agent.cli import main
from icae.scripts import entry

__all__ = ["main"]

if __name__ == "__main__":
    entry(main)
