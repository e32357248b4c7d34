"""The measurement script of docs/agent_env.md, "Trained agents, closed loop": serve a checkpoint with `icae serve`
and run tasks of icae.agent closed-loop over the OpenAI protocol. (The benchmark proper, with decoder positions, KV
cache and window figures, is `python -m icae.benchmarks.agent`, docs/bench_agent.md.)

    python docs/results/agent_closed_loop.py NAME MODE TASKS CONFIG [KEY=VALUE ...]
    MODE: tools | text; TASKS: N (the first N held-out tasks, seed 0) or train:N (the first N of the recipe's
    train split of outputs/agent_tools/trajectories.jsonl: tasks the agent was fine-tuned on)

STATEMENT=tokens in the environment states the held-out tasks as `generate_trajectories --statement tokens` does;
TREE_NAMES=a,b,c puts the held-out trees (stdlib n-z, yaml, tqdm) under those directory names (a probe: the same
tasks, their paths starting with names the agents were trained on).
Greedy, step limit 20, 192 new tokens a reply, 8 episodes at a time (the server batches them). Writes
runs/agent_tools/NAME.json (every episode's summary and conversation) and prints the row of the table and the actions
of three failed episodes.
"""

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai

from icae.agent import TOOLS, StopEpisode, heldout_tasks, run_episode
from icae.metrics.agent import wilson_interval

HERE = Path("runs/agent_tools")
HERE.mkdir(parents=True, exist_ok=True)
name, mode, num, config, *overrides = sys.argv[1:]
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
log = open(HERE / f"{name}.serve.log", "w")
server = subprocess.Popen([sys.executable, "-m", "icae.serve", "--config_path", config, "--port", str(port),
                           "torch_threads=1", "max_batch_size=8", *overrides], stdout=log, stderr=log)
try:
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            break
        except httpx.HTTPError:
            assert server.poll() is None, f"the server exited: {HERE / f'{name}.serve.log'}"
            time.sleep(1)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=600)
    model = client.models.list().data[0].id

    def policy(messages):
        extra = {"tools": TOOLS} if mode == "tools" else {}
        try:
            r = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=192, **extra)
        except openai.BadRequestError as e:
            if "context_length_exceeded" in str(e) or "maximum context length" in str(e):
                raise StopEpisode("context window full") from None
            raise
        return r.choices[0].message if mode == "tools" else r.choices[0].message.content

    def run(task):
        started = time.perf_counter()
        episode = run_episode(policy, task, max_steps=20, mode=mode)
        return episode, time.perf_counter() - started

    if num.startswith("train:"):  # tasks the agent was fine-tuned on: the train split of the recipe's data
        import sysconfig
        from icae.agent import TaskTree, tasks_from_tree
        from icae.data.sources import split_tasks
        records = [json.loads(line) for line in open("outputs/agent_tools/trajectories.jsonl")]
        train, _ = split_tasks(records, 0.1, 0)
        std = Path(sysconfig.get_paths()["stdlib"])
        trees = "json email http logging urllib concurrent importlib xml/etree".split()
        known = {(t.path, t.function): t for n in trees for t in tasks_from_tree(TaskTree.whole(std / n), False)}
        tasks = []
        for r in train:
            opened = next(json.loads(m["tool_calls"][0]["function"]["arguments"]) for m in r["messages"]
                          if m.get("tool_calls") and m["tool_calls"][0]["function"]["name"] == "open")
            term = json.loads(r["messages"][2]["tool_calls"][0]["function"]["arguments"])["search_term"]
            tasks.append(known[(opened["path"], term[len("def "):-1])])
        tasks = tasks[:int(num.split(":")[1])]
    else:
        trees = None
        if os.environ.get("TREE_NAMES"):  # the held-out trees under other names (paths <name>/<file>): a probe
            from icae.agent.tasks import TaskTree, heldout_trees
            trees = [TaskTree(t.root, name, t.files) for t, name in zip(heldout_trees(),
                                                                         os.environ["TREE_NAMES"].split(","))]
        tasks = heldout_tasks(int(num), seed=0, trees=trees, statement=os.environ.get("STATEMENT", "plain"))
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(run, tasks))
    wall = time.perf_counter() - started
finally:
    server.terminate()
    server.wait(60)

episodes = [e for e, _ in done]
n, ok = len(episodes), sum(e.success for e in episodes)
low, high = wilson_interval(ok, n)
row = {"agent": name, "mode": mode, "tasks": n, "success": ok / n, "ci95": [low, high],
       "steps": sum(e.steps for e in episodes) / n, "submitted": sum(e.submitted for e in episodes) / n,
       "format_errors": sum(e.format_errors for e in episodes) / n,
       "reference_match": sum(e.reference_match for e in episodes) / n,
       # episodes whose first k actions are all the reference's, k = 1..5 (search, open, edit, py_compile, submit)
       "right_from_start": [sum(e.leading_right >= k for e in episodes) for k in range(1, 6)],
       "stopped": sum(bool(e.stopped) for e in episodes),
       "seconds_per_task": sum(s for _, s in done) / n, "wall_s": wall}
(HERE / f"{name}.json").write_text(json.dumps({"row": row, "episodes": [
    e.summary() | {"seconds": s, "messages": e.messages} for e, s in done]}, indent=1, default=str))
print(json.dumps(row))
for e in [e for e in episodes if not e.success][:3]:
    print("FAILED", e.task_id, "steps", e.steps, "format errors", e.format_errors, "problems", e.problems[:2])
    for a in e.actions[:8]:
        print("   ", (a or "<format error>").replace("\n", "\\n")[:150])
