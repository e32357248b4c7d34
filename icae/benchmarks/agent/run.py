"""Running each agent of a spec on the held-out tasks and recording every episode.

Every agent gets the same tasks (``heldout_tasks(spec.tasks, spec.seed)``). A served agent's server is started once
for consecutive agents with the same ``serve`` block (the full-history and truncated agents share a SimpleLLM
server) and stopped after them. An agent that cannot run (LLMLingua without its environment, a server that fails
mid-run) is recorded with the reason, and the others still run.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

from icae.agent import Task, heldout_tasks, oracle_policy, run_episode, wrong_policy
from icae.benchmarks.agent.policies import LLMLingua, Measured, Truncate, served_ask
from icae.benchmarks.agent.server import serve_config, served
from icae.benchmarks.agent.spec import DTYPE_BYTES, AgentSpec, BenchSpec, SpecError
from icae.errors import UserError
from icae.metrics.agent import kv_shape, summarize


def serve_block(agent: AgentSpec, spec: BenchSpec) -> dict | None:
    """The agent's ``serve`` block as its server runs it: with the spec's ``chat_template`` (if any) as one more
    override, so every served agent reads the conversation as the unserved ones are counted. The path is made
    absolute here, where it was checked: the server runs in the repository's root, not the caller's directory."""
    if agent.serve is None or spec.chat_template is None:
        return agent.serve
    template = Path(spec.chat_template).resolve()
    return {**agent.serve, "overrides": [*agent.serve.get("overrides", []), f"chat_template={template}"]}


def check_served(spec: BenchSpec) -> dict[str, object]:
    """Each served agent's ``icae serve`` config, loaded (bad configs and observation/model mismatches as one
    SpecError before anything runs)."""
    configs, problems = {}, []
    for agent in spec.agents:
        if agent.serve is None:
            continue
        try:
            config = serve_config(serve_block(agent, spec))
        except UserError as e:  # ConfigError names every problem of that config
            problems.append(f"agent {agent.name!r}: its serve config: {e}")
            continue
        kind = config.model.model_type
        if agent.observations == "compressed" and kind != "icae":
            problems.append(f"agent {agent.name!r}: observations: compressed needs an ICAE server (model_type: icae),"
                            f" its serve config has model_type: {kind}")
        if agent.observations != "compressed" and kind != "llm":
            problems.append(f"agent {agent.name!r}: observations: {agent.observations} needs a server that reads "
                            "every token (model_type=llm restore_from=null): an ICAE server would compress them too")
        configs[agent.name] = config
    if problems:
        raise SpecError(f"{spec.source}: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
    return configs


def base_of(agent: AgentSpec, config) -> str | None:
    """The base model whose tokenizer and shape the agent's counts use."""
    return agent.tokenizer or (config.model.model_name_or_path if config is not None else None)


def kv_bytes_per_position(base: str | None, agent: AgentSpec, config) -> int | None:
    """Bytes the decoder's KV cache takes per position (2 x layers x KV heads x head dim x dtype bytes), from the
    base model's config.json; None without a base."""
    if base is None:
        return None
    from icae.models.loading import resolve_model_path

    hf = json.loads((Path(resolve_model_path(base)) / "config.json").read_text())
    dtype = agent.kv_dtype or (config.model.torch_dtype if config is not None else "float32")
    if dtype == "auto":
        dtype = hf.get("dtype") or hf.get("torch_dtype") or "float32"
    layers, heads, head_dim = kv_shape(hf)
    return 2 * layers * heads * head_dim * DTYPE_BYTES.get(dtype, 4)


def episode_record(policy: Measured, task: Task, max_steps: int, mode: str) -> dict:
    start = time.perf_counter()
    episode = run_episode(policy, task, max_steps=max_steps, mode=mode)
    refused = (episode.stopped or "").startswith("context_length_exceeded")
    return {**episode.summary(), "problems": list(episode.problems), "seconds": time.perf_counter() - start,
            "requests": policy.requests, "refused_at": len(policy.requests) + 1 if refused else None,
            "messages": episode.messages}


def run_agent(agent: AgentSpec, spec: BenchSpec, tasks: list[Task], config=None, url: str | None = None,
              model: str | None = None, log=print) -> dict:
    """Every task (and the window run, if the spec asks for one) for one agent; its record with the summary."""
    mode = agent.mode or spec.mode
    from icae.models.loading import load_tokenizer, resolve_model_path

    base = base_of(agent, config)
    tokenizer = load_tokenizer(base) if base is not None else None  # spec: a budget without a base is refused
    keeper = None
    if agent.observations == "truncate":
        keeper = Truncate(tokenizer, agent.min_tokens, agent.budget_tokens, agent.budget_rate, agent.keep)
    elif agent.observations == "llmlingua":
        keeper = LLMLingua(tokenizer, resolve_model_path(base), agent.min_tokens, agent.budget_tokens,
                           agent.budget_rate)
    kv = kv_bytes_per_position(base, agent, config)
    template = Path(spec.chat_template).read_text(encoding="utf-8") if spec.chat_template else None
    client = None
    if agent.served:
        from openai import OpenAI

        client = OpenAI(base_url=url or agent.base_url, api_key=agent.api_key, timeout=600, max_retries=0)
        model = model or agent.model or client.models.list().data[0].id

    def policy_for(task: Task) -> Measured:
        if agent.policy == "served":
            ask = served_ask(client, model, mode, spec.max_tokens)
        else:
            scripted = (oracle_policy if agent.policy == "oracle" else wrong_policy)(task, mode)
            ask = lambda messages: (scripted(messages), None)
        return Measured(ask, mode, keeper, tokenizer, kv, agent.rate, agent.mem_size, agent.min_tokens, template)

    episodes, window_episodes = [], []
    for i, task in enumerate(tasks):
        episodes.append(episode_record(policy_for(task), task, spec.max_steps, mode))
        e = episodes[-1]
        log(f"  {agent.name}: task {i + 1}/{len(tasks)} {task.id}: {'success' if e['success'] else 'failure'} in "
            f"{e['steps']} steps, {e['seconds']:.1f} s" + (f" (stopped: {e['stopped'][:80]})" if e['stopped'] else ""))
    for task in tasks[:spec.window_tasks]:
        window_episodes.append(episode_record(policy_for(task), task, spec.window_max_steps, mode))
    summary = summarize(episodes, spec.window)
    over = summarize(window_episodes, spec.window) if window_episodes else summary
    summary.update({"steps_fit": over["steps_fit"], "episodes_over_window": over["episodes_over_window"],
                    "window_runs": len(over["steps_fit"]),
                    "window_max_steps": spec.window_max_steps if window_episodes else spec.max_steps,
                    "positions_source": sorted({r["source"] for e in episodes for r in e["requests"]
                                                if r["source"]}) or None})
    return {"agent": asdict(agent), "describe": agent.describe(), "mode": mode, "model": model, "base": base,
            "summary": summary, "episodes": episodes, "window_episodes": window_episodes}


def run_spec(spec: BenchSpec, out: Path, log=print) -> dict[str, dict]:
    """Every agent of ``spec``, in order: ``{agent name: record}`` (a record with ``not_run`` where it could not)."""
    from icae.benchmarks.peers import peer_python

    configs = check_served(spec)
    tasks = heldout_tasks(spec.tasks, spec.seed, statement=spec.statement)
    log(f"{len(tasks)} held-out tasks (seed {spec.seed}), {len(spec.agents)} agents")
    results: dict[str, dict] = {}
    with ExitStack() as stack:
        current, server = None, None
        for agent in spec.agents:
            started = time.perf_counter()
            if agent.observations == "llmlingua" and peer_python("llmlingua") is None:
                results[agent.name] = {"agent": asdict(agent), "describe": agent.describe(), "not_run": (
                    "LLMLingua's environment is missing: `make peers` builds .peers/llmlingua (LLMLingua 0.2.2 "
                    "needs transformers 4.x, not this project's)")}
                log(f"{agent.name}: not run: {results[agent.name]['not_run']}")
                continue
            serve = serve_block(agent, spec)
            key = json.dumps(serve, sort_keys=True) if serve else None
            if key != current:
                stack.close()
                current, server = key, None
                if key is not None:
                    log(f"starting icae serve for {agent.name} ({serve['config']} "
                        f"{' '.join(map(str, serve.get('overrides', [])))})")
                    server = stack.enter_context(served(serve, out / "logs" / f"{agent.slug}.server.log"))
            url, model = server if server else (None, None)
            try:
                results[agent.name] = run_agent(agent, spec, tasks, configs.get(agent.name), url, model, log)
            except SpecError:
                raise
            except Exception as e:  # a server that died, a peer that failed: this agent is reported, the rest run
                results[agent.name] = {"agent": asdict(agent), "describe": agent.describe(),
                                       "not_run": f"{type(e).__name__}: {str(e)[:500]}"}
            results[agent.name]["seconds"] = time.perf_counter() - started
            log(f"{agent.name}: done in {results[agent.name]['seconds']:.0f} s")
    return results
