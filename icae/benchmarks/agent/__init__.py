"""The closed-loop agent benchmark (issue #24, items 4-5): agents run on held-out tasks of the agent environment
(:mod:`icae.agent`), each an offline policy (the oracle's ceiling, the wrong policy's floor) or a model served over
the OpenAI protocol, with its observations compressed by the server, whole, truncated or compressed by LLMLingua to a
budget; per agent: success with its 95% interval, steps, exact actions, prompt tokens against decoder positions, peak
KV cache, seconds per task, and steps that fit before a fixed window (:mod:`icae.metrics.agent`).

    python -m icae.benchmarks.agent --spec icae/configs/bench_agent/quick.yaml      (make bench-agent-quick)

See docs/bench_agent.md.
"""

from icae.benchmarks.agent.spec import AgentSpec, BenchSpec, SpecError, load_spec

__all__ = ["AgentSpec", "BenchSpec", "SpecError", "load_spec"]
